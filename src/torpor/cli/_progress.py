"""A one-line transfer progress display, on a TTY only."""

from __future__ import annotations

import sys
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
