"""One thread that calls functions at their due times: the short waits of every run on the agent.

A thread per short wait would let a task that asks for many of them make the
agent hold as many threads; here each costs one heap entry.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Alarms:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()  # ties keep the order they were set in
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, delay: float, fn: Callable[[], object]) -> None:
        """Call ``fn()`` in the alarm thread once ``delay`` seconds have passed."""
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._order), fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="alarms")
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # noqa: BLE001 - one failing alarm must not stop the others
                log.exception("alarm failed")


ALARMS = Alarms()
"""The agent's one alarm thread, shared by every run."""
