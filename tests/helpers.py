"""Helpers every test may import: ``from helpers import need, free_port, assert_eventually``.

Real parts only: tests that need root, runc, CRIU, Postgres or MinIO skip with
the reason when the part is missing on a laptop, and FAIL under CI (CI=true),
so a green CI never means "everything was skipped".
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T = TypeVar("T")


def need(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when a real part the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (runc and CRIU)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_eventually(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, msg: str = "") -> T:
    """Call ``fn`` until it returns a truthy value without raising; return that value."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last_exc = None
        except AssertionError as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f": {last_exc}" if last_exc else ""
            raise AssertionError(f"not true within {timeout}s{detail} {msg}".rstrip())
        time.sleep(interval)


def in_netns(pid: int, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread that has joined the network namespace of process ``pid``.

    Sockets ``fn`` makes belong to that namespace: how a test talks to a server a
    run listens with on its own loopback. (setns of a network namespace is per thread.)
    """
    import ctypes
    import threading

    out: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns into the network namespace of {pid}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name=f"netns-{pid}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]


class ResourceWatch:
    """Samples a process's RSS and thread count (psutil) until stopped, keeping the peaks.

    ``probe``, if given, is sampled too (the peak of whatever it counts): a
    test asserts bounds on what a process held, not on how long anything took.
    """

    def __init__(self, pid: int | None = None, probe: Callable[[], int] | None = None, period: float = 0.05) -> None:
        import threading

        import psutil

        self.proc = psutil.Process(pid)
        self.rss_before = self.proc.memory_info().rss
        self.threads_before = self.proc.num_threads()
        self.max_rss = self.rss_before
        self.max_threads = self.threads_before
        self.max_probe = 0
        self._probe = probe
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resource-watch")
        self._thread.start()

    @property
    def rss_growth(self) -> int:
        return self.max_rss - self.rss_before

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.max_rss = max(self.max_rss, self.proc.memory_info().rss)
                self.max_threads = max(self.max_threads, self.proc.num_threads())
            except Exception:  # noqa: BLE001 - the process ended: the peaks so far stand
                return
            if self._probe is not None:
                self.max_probe = max(self.max_probe, self._probe())

    def stop(self) -> "ResourceWatch":
        self._stop.set()
        self._thread.join()
        return self
