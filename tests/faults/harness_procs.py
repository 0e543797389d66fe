"""Processes the harness starts, and the signals it sends them: always by pid, never by name.

Every process is a ``Proc``: its Popen handle, its log file, and the pid it
had when started. A signal goes to that pid only while the Popen says the
process has not been reaped, so a recycled pid is never hit. Process trees
(Postgres and its backends, an agent and its runc/CRIU children) are listed
from the pid we started, with psutil, and each member is checked to have
been created after its root.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
from helpers import assert_eventually

log = logging.getLogger(__name__)


class Proc:
    def __init__(self, name: str, cmd: list[str], *, log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, new_session: bool = True) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} start {name}: {' '.join(cmd)}\n".encode())
            out.flush()
            self._log_offset = out.tell()  # log_text() and wait_log() look at this run of the process only
            # A session of its own: a Ctrl-C at the terminal reaches pytest only.
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, cwd=cwd, start_new_session=new_session)
        self.pid = self.popen.pid
        try:
            self.started = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:  # died at once: no tree to look at
            self.started = time.time()

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def tree(self) -> list[psutil.Process]:
        """The process and every descendant, as they are now (started after it, so none is a recycled pid)."""
        if not self.alive:
            return []
        try:
            root = psutil.Process(self.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [p for p in members if _created_after(p, self.started)]

    def signal_tree(self, sig: int) -> None:
        for p in self.tree():
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it takes longer than ``timeout``."""
        if not self.alive:
            return
        os.kill(self.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %ss; killing it", self, timeout)
            self.kill()

    def log_text(self, since_start: bool = True) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        """Wait until this process (since it started) has logged ``needle``; fail early if it died."""
        def seen() -> bool:
            if needle in self.log_text():
                return True
            assert self.alive, f"{self} exited ({self.popen.returncode}) before logging {needle!r}:\n{self.tail()}"
            return False
        assert_eventually(seen, timeout=timeout, interval=0.02, msg=f"{self} never logged {needle!r}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]


def _created_after(p: psutil.Process, t: float) -> bool:
    try:
        return p.create_time() >= t - 0.01
    except psutil.NoSuchProcess:
        return False


def kill_pid_if(pid: int, *, started_after: float, cmd_has: str) -> bool:
    """SIGKILL ``pid`` only if it is a process of ours: created after ``started_after``, its command naming ``cmd_has``."""
    try:
        p = psutil.Process(pid)
        if not _created_after(p, started_after) or cmd_has not in " ".join(p.cmdline()):
            return False
        p.send_signal(signal.SIGCONT)
        p.kill()
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
