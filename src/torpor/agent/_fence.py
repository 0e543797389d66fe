"""Lease-guarded execution: an agent's containers run only while it holds its lease.

Every container of one agent lives under one cgroup, ``torpor/<key>``
(``Freezer``). The agent writes, to ``STATE/fence/lease``, the moment until
which it may let them run: the send time of its last heartbeat (or Register)
whose renewal the coordinator confirmed, plus ``fence_seconds``. A guard, a
small process of its own (``python -m torpor.agent._fence``, its own session,
pid in ``STATE/guard.pid``), reads that file every ``POLL`` seconds and
freezes the whole cgroup once the moment has passed: new containers created
under a frozen cgroup are frozen too, and a CRIU dump that thaws its own
container cannot thaw the parent. The guard does not depend on the agent
process: an agent that hangs (SIGSTOP, a stalled disk) or dies stops
renewing, and its containers freeze all the same.

Only the agent thaws, and only after a confirmed renewal, under the same lock
the guard freezes under, and after it has sent SIGKILL to every container the
coordinator named stale (a process frozen in a cgroup v1 freezer dies of the
signal as soon as it is thawed, before it runs any code of its own).

The timing argument is in docs/coordinator.md ("Fencing"). Times are
CLOCK_BOOTTIME, which keeps counting while the machine is suspended.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

POLL = 0.1
"""Seconds between two looks of the guard at the lease."""
_LOCK_PATIENCE = 0.5
"""Seconds the guard waits for the agent's lock before it freezes without it (the agent may be hung holding it)."""


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Freezer:
    """The cgroup holding every container of one agent (cgroup v2 or the v1 freezer hierarchy)."""

    def __init__(self, relative: str, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.relative = relative.strip("/")
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()
        self.path = root / self.relative if self.v2 else root / "freezer" / self.relative

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def freeze(self) -> None:
        self._write("1" if self.v2 else "FROZEN")

    def thaw(self) -> None:
        if self.path.exists():
            self._write("0" if self.v2 else "THAWED")

    def _write(self, value: str) -> None:
        (self.path / ("cgroup.freeze" if self.v2 else "freezer.state")).write_text(value)

    def frozen(self) -> bool:
        """Freezing asked for (it may still be taking hold)."""
        try:
            if self.v2:
                return (self.path / "cgroup.freeze").read_text().strip() == "1"
            return (self.path / "freezer.state").read_text().strip() != "THAWED"
        except FileNotFoundError:
            return False

    def has_processes(self) -> bool:
        if not self.path.exists():
            return False
        for d, _, _ in os.walk(self.path):
            try:
                if (Path(d) / "cgroup.procs").read_text().strip():
                    return True
            except OSError:
                continue
        return False

    def remove(self) -> None:
        """Remove the agent's cgroup, in every hierarchy runc made it in, where nothing is left (best effort)."""
        tops = [self.path] if self.v2 else [h / self.relative for h in self.root.iterdir() if h.is_dir()]
        for top in tops:
            for d, _, _ in sorted(os.walk(top), key=lambda e: -len(e[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(d)


class LeaseFile:
    """``STATE/fence/lease``: the CLOCK_BOOTTIME moment until which containers may run; a lock beside it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "lease"
        self._lock_path = directory / "lock"

    def write(self, until: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{until:.6f}\n")
        os.replace(tmp, self.path)

    def read(self) -> float:
        try:
            return float(self.path.read_text())
        except (OSError, ValueError):
            return 0.0  # missing or torn: no lease

    @contextlib.contextmanager
    def locked(self, patience: float | None = None) -> Iterator[bool]:
        """Hold the lock (True), or, past ``patience`` seconds, go on without it (False)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            held = False
            give_up = None if patience is None else time.monotonic() + patience
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if give_up is None else fcntl.LOCK_NB))
                    held = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:  # type: ignore[operator]
                        break
                    time.sleep(0.01)
            yield held
        finally:
            os.close(fd)  # releases the lock


# -- the agent's side ------------------------------------------------------------


class Fence:
    """The agent's half: record confirmed renewals, thaw after them, keep a guard running."""

    def __init__(self, state_dir: Path, freezer: Freezer) -> None:
        self.state_dir = state_dir
        self.freezer = freezer
        self.lease = LeaseFile(state_dir / "fence")
        self.pid_file = state_dir / "guard.pid"
        self.fence_seconds = 0.0  # until the coordinator says
        self._sent: dict[int, float] = {}
        self._number = 0
        self._mutex = threading.Lock()
        self._guard: subprocess.Popen[bytes] | None = None
        self._frozen_since: float | None = None

    # Guards of earlier agent processes ------------------------------------------

    def stop_old_guard(self) -> None:
        """End the guard an earlier agent process of this state directory left (by its recorded pid)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return
        if _is_guard(pid, self.state_dir):
            log.info("stopping the guard %d of an earlier agent process", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        self.pid_file.unlink(missing_ok=True)

    def start(self) -> None:
        """No lease yet: write an expired one and start the guard."""
        self.freezer.ensure()
        self.lease.write(0.0)
        self.ensure_guard()

    def ensure_guard(self) -> None:
        if self._guard is not None and self._guard.poll() is None:
            return
        if self._guard is not None:
            log.error("the fencing guard exited (status %s); starting it again", self._guard.returncode)
        err = open(self.state_dir / "guard.log", "ab")
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "torpor.agent._fence", "--state-dir", str(self.state_dir),
                 "--cgroup", self.freezer.relative, "--agent-pid", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )
        finally:
            err.close()
        self.pid_file.write_text(f"{self._guard.pid}\n")

    def stop_guard(self) -> None:
        """On a clean exit with no container left: the guard has nothing to guard."""
        if self._guard is not None and self._guard.poll() is None:
            self._guard.kill()
            self._guard.wait()
        self.pid_file.unlink(missing_ok=True)

    # Renewals ----------------------------------------------------------------------

    def next_heartbeat(self) -> int:
        """Number a heartbeat about to be sent and remember when."""
        with self._mutex:
            self._number += 1
            self._sent[self._number] = now()
            for old in [n for n in self._sent if n < self._number - 100]:
                del self._sent[old]
            return self._number

    def heartbeat_confirmed(self, number: int, kill_stale: Callable[[], None],
                            after_thaw: Callable[[], None] | None = None) -> None:
        with self._mutex:
            sent = self._sent.pop(number, None)
        if sent is not None:
            self.renewed(sent, kill_stale, after_thaw)

    def renewed(self, sent: float, kill_stale: Callable[[], None], after_thaw: Callable[[], None] | None = None) -> None:
        """A renewal sent at ``sent`` is committed: containers may run until ``sent + fence_seconds``.

        Stale containers get their SIGKILL before the thaw, so none runs again.
        ``after_thaw`` runs once the parent is thawed (the agent resumes a
        container a dump left frozen on its own).
        """
        if self.fence_seconds <= 0:
            return
        with self.lease.locked():
            until = max(self.lease.read(), sent + self.fence_seconds)
            self.lease.write(until)
            if now() >= until:
                return  # confirmed too late to matter: stay frozen until a fresher renewal
            if not self.freezer.frozen():
                return
            kill_stale()
            self.freezer.thaw()
            frozen_for = "" if self._frozen_since is None else f" after {now() - self._frozen_since:.1f}s"
            log.warning("lease renewed: this agent's containers run again%s", frozen_for)
            self._frozen_since = None
        if after_thaw is not None:
            after_thaw()

    def lapsed_for(self) -> float:
        """Seconds since the lease ran out here (0 while it holds or before the first one)."""
        if self.fence_seconds <= 0:
            return 0.0
        return max(0.0, now() - self.lease.read())

    def check(self) -> None:
        """The agent's own look (besides the guard's): freeze if the lease lapsed; keep the guard alive."""
        if self.fence_seconds > 0:
            freeze_if_lapsed(self.lease, self.freezer)
        if self.freezer.frozen() and self._frozen_since is None:
            self._frozen_since = now()
            log.warning("no lease renewal confirmed for %.1fs: this agent's containers are frozen until one is",
                        self.fence_seconds)
        self.ensure_guard()


def freeze_if_lapsed(lease: LeaseFile, freezer: Freezer) -> bool:
    """Freeze ``freezer`` if the lease has run out and it is not frozen yet; True if this call froze it.

    Decided under the lease lock (or without it past its patience: the agent
    may be hung holding it), so a renewal written meanwhile is seen.
    """
    if now() < lease.read() or freezer.frozen():
        return False
    with lease.locked(patience=_LOCK_PATIENCE):
        if now() < lease.read() or not freezer.path.exists() or freezer.frozen():
            return False
        freezer.freeze()
        return True


def _is_guard(pid: int, state_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"torpor.agent._fence" in cmdline and str(state_dir).encode() in cmdline


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.02)


# -- the guard process ----------------------------------------------------------------


def guard(state_dir: Path, freezer: Freezer, agent_pid: int, poll: float = POLL) -> int:
    """Freeze ``freezer`` whenever the lease lapsed; exit once the agent is gone and no container is left."""
    lease = LeaseFile(state_dir / "fence")
    try:
        agent = os.pidfd_open(agent_pid)
    except ProcessLookupError:
        agent = None
    while True:
        if freeze_if_lapsed(lease, freezer):
            log.warning("the lease lapsed: froze %s", freezer.path)
        agent_gone = agent is None or bool(select.select([agent], [], [], 0)[0])
        if agent_gone and not freezer.has_processes():
            log.info("agent %d is gone and no container is left: the guard exits", agent_pid)
            freezer.remove()
            return 0
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torpor.agent._fence",
                                     description="Freeze an agent's containers when its lease lapses.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cgroup", required=True, help="the agent's cgroup, relative to the cgroup root")
    parser.add_argument("--agent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s guard[%(process)d] %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the agent ends it, by pid, with SIGKILL
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)  # it must get the CPU on a busy host (docs/coordinator.md)
    return guard(args.state_dir, Freezer(args.cgroup), args.agent_pid)


if __name__ == "__main__":
    sys.exit(main())
