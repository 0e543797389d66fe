"""LISTEN/NOTIFY fan-in: one connection per coordinator hears every change.

Payloads on channel ``torpor``: ``wake`` (work for the scheduler),
``cmd:<agent>`` (outbox rows for an agent), ``run:<id>`` (a run changed),
``log:<id>`` (a run logged). Notifications can be lost when the connection
drops, so every waiter also polls on a timeout; they only make things prompt.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

from torpor.coordinator._db import backoff_delays, connect_retrying

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, db_url: str, *, on_wake: Callable[[], None], on_command: Callable[[str], None]) -> None:
        self._url = db_url
        self._on_wake = on_wake
        self._on_command = on_command
        self._cv = threading.Condition()
        self._versions: dict[str, int] = {}
        self._watchers: dict[str, int] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torpor-listen", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Callable[[float], bool]]:
        """Within the block, ``wait(timeout)`` returns True once ``key`` was notified since the last call."""
        with self._cv:
            self._watchers[key] = self._watchers.get(key, 0) + 1
            seen = [self._versions.get(key, 0)]

        def wait(timeout: float) -> bool:
            with self._cv:
                self._cv.wait_for(lambda: self._versions.get(key, 0) != seen[0] or self._stopped.is_set(), timeout)
                changed = self._versions.get(key, 0) != seen[0]
                seen[0] = self._versions.get(key, 0)
                return changed

        try:
            yield wait
        finally:
            with self._cv:
                self._watchers[key] -= 1
                if not self._watchers[key]:
                    del self._watchers[key]
                    self._versions.pop(key, None)

    def _bump(self, key: str) -> None:
        with self._cv:
            if key in self._watchers:
                self._versions[key] = self._versions.get(key, 0) + 1
                self._cv.notify_all()

    def _dispatch(self, payload: str) -> None:
        if payload == "wake":
            self._on_wake()
        elif payload.startswith("cmd:"):
            self._on_command(payload[4:])
        else:
            self._bump(payload)

    def _loop(self) -> None:
        delays: list[float] = []
        while not self._stopped.is_set():
            try:
                conn = connect_retrying(self._url, autocommit=True)
            except Exception:
                log.exception("notification listener cannot connect")
                self._stopped.wait(1.0)
                continue
            try:
                conn.execute("LISTEN torpor")
                self.connected.set()
                delays = []
                # Anything missed while disconnected: let every consumer look again.
                self._on_wake()
                while not self._stopped.is_set():
                    for note in conn.notifies(timeout=0.5, stop_after=256):
                        self._dispatch(note.payload)
            except Exception as exc:
                self.connected.clear()
                if not delays:
                    delays = backoff_delays(10, base=0.1)
                log.warning("notification listener lost its connection (%s); reconnecting", exc)
                self._stopped.wait(delays.pop(0) if delays else 1.0)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        with self._cv:
            self._cv.notify_all()
