"""Which containers the kernel's OOM killer ended, told apart from other SIGKILLs.

A container killed for going over its memory limit exits with status 137, as
one killed by anything else does, and runc removes its cgroup (with the
kernel's count of OOM kills in it) as soon as it ends. So, as containerd does
on cgroup v1, the agent asks the kernel to signal an eventfd on each
container's ``memory.oom_control`` (``cgroup.event_control``) while it runs.
The kernel signals it when the cgroup goes OOM, and also when the cgroup is
removed; an event while the cgroup still exists is an OOM. One thread waits on
all the eventfds with epoll.

On cgroup v2 (memory.events, counted up the tree) the agent compares the count
of the cgroup all its containers live under before and after; a container
that ends with 137 while that count went up is taken as OOM-killed. Two
containers ending at once can be confused there (not on v1).
"""

from __future__ import annotations

import logging
import os
import select
import threading
from pathlib import Path

log = logging.getLogger(__name__)

V1_MEMORY = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def _count(path: Path, key: str = "oom_kill") -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


class OomWatcher:
    def __init__(self, cgroup_parent: str) -> None:
        self.parent = cgroup_parent.strip("/")
        self.v1 = (V1_MEMORY / "cgroup.event_control").exists()
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[str, Path]] = {}  # eventfd -> (container id, its memory cgroup)
        self._killed: set[str] = set()
        self._v2_start: dict[str, int] = {}
        self._epoll = select.epoll() if self.v1 else None
        if self._epoll is not None:
            threading.Thread(target=self._loop, daemon=True, name="oom-watcher").start()

    def watch(self, container_id: str) -> None:
        """Start watching a container whose cgroup exists (its process has been created)."""
        if not self.v1:
            self._v2_start[container_id] = _count(V2_ROOT / self.parent / "memory.events") or 0
            return
        cgroup = V1_MEMORY / self.parent / container_id
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(cgroup / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (cgroup / "cgroup.event_control").write_text(f"{efd} {ofd}")
            finally:
                os.close(ofd)
        except OSError:
            os.close(efd)
            log.warning("cannot watch the memory cgroup of %s for OOM kills", container_id, exc_info=True)
            return
        with self._lock:
            self._watched[efd] = (container_id, cgroup)
        assert self._epoll is not None
        self._epoll.register(efd, select.EPOLLIN)

    def oom_killed(self, container_id: str) -> bool:
        """Whether the OOM killer ended the container (ask once it has exited); forgets it."""
        if not self.v1:
            start = self._v2_start.pop(container_id, None)
            now = _count(V2_ROOT / self.parent / "memory.events")
            return start is not None and now is not None and now > start
        self._drain()
        with self._lock:
            killed = container_id in self._killed
            self._killed.discard(container_id)
            return killed

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._killed.discard(container_id)
        self._v2_start.pop(container_id, None)

    def _drain(self) -> None:
        """Handle events already signalled (the loop may not have run since the container ended)."""
        with self._lock:
            fds = list(self._watched)
        for efd in fds:
            self._event(efd)

    def _loop(self) -> None:
        assert self._epoll is not None
        while True:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for efd, _ in events:
                self._event(efd)

    def _event(self, efd: int) -> None:
        try:
            os.eventfd_read(efd)
        except BlockingIOError:
            return  # nothing signalled
        except OSError:
            return  # closed by another caller
        with self._lock:
            entry = self._watched.get(efd)
            if entry is None:
                return
            container_id, cgroup = entry
            if (cgroup / "memory.oom_control").exists():
                # Signalled while the cgroup exists: it went OOM. (The kernel signals before the kill is
                # done; the container's end and runc's removal of the cgroup take a reap and an rmdir more,
                # which this thread, woken by the signal itself, comes before.)
                self._killed.add(container_id)
                return
            # The cgroup was removed: the container ended; stop watching.
            del self._watched[efd]
        assert self._epoll is not None
        try:
            self._epoll.unregister(efd)
        except (OSError, ValueError):
            pass
        os.close(efd)
