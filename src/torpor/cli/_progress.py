"""One-line progress displays, on a TTY only: transfers (bytes) and steps of unknown length."""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    """Callable with byte counts (a store ``Progress``); redraws at most 10 times a second."""

    def __init__(self, label: str, total: int | None, *, stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            text = f"{self.label}: {self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB ({pct:.0f}%) {rate / 1e6:,.0f} MB/s"
        else:
            text = f"{self.label}: {self.done / 1e6:,.1f} MB {rate / 1e6:,.0f} MB/s"
        self.stream.write("\r" + text.ljust(78))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


class Stage:
    """A step of unknown length (resolving, installing): its label and the seconds so far, on a TTY only.

    ``with Stage("building environment env-..."):`` redraws the line twice a second from a thread while the
    block runs, then ends it with the time it took (or "failed").
    """

    def __init__(self, label: str, *, stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0

    def __enter__(self) -> "Stage":
        self.started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, daemon=True, name="progress")
            self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._done.wait(0.5):
            self._draw(f"{time.monotonic() - self.started:.0f}s")

    def _draw(self, state: str) -> None:
        self.stream.write("\r" + f"{self.label}: {state}".ljust(78))
        self.stream.flush()

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._draw("failed" if exc_type else f"done in {time.monotonic() - self.started:.1f}s")
            self.stream.write("\n")
            self.stream.flush()
