"""The hostile tasks the agent-layer tests run (hostile_task.py, hog_task.py) and what they must see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from counter_support import counter_app

HERE = Path(__file__).resolve().parent
HOSTILE = ["/usr/bin/python3", "/app/hostile_task.py"]
"""Tries refused syscalls, then ordinary work; ROUNDS=0 for ever, TARGET_PID another run's process to ptrace."""
HOG = ["/usr/bin/python3", "/app/hog_task.py"]
"""HOG=bomb forks until refused; HOG=fill fills its tmpfs mounts until ENOSPC."""

REFUSED = {
    "unshare(CLONE_NEWUSER)": "EPERM", "unshare(CLONE_NEWNET)": "EPERM",
    "clone(CLONE_NEWUSER)": "EPERM", "clone(CLONE_NEWNET)": "EPERM", "clone(CLONE_NEWNS|CLONE_NEWPID)": "EPERM",
    "clone3()": "ENOSYS", "clone3(CLONE_NEWUSER)": "ENOSYS",
    "mount": "EPERM", "umount2": "EPERM", "pivot_root": "EPERM", "chroot": "EPERM",
    "ptrace(own child)": "EPERM", "ptrace(other run)": "EPERM", "process_vm_readv": "EPERM",
    "keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM", "bpf": "EPERM", "perf_event_open": "EPERM",
    "setns": "EPERM", "userfaultfd": "EPERM", "memfd_secret": "EPERM", "modify_ldt": "EPERM",
    "io_uring_setup": "EPERM", "kexec_load": "EPERM", "init_module": "EPERM", "open_by_handle_at": "EPERM",
    "fsopen": "EPERM", "clock_settime": "EPERM", "sethostname": "EPERM", "reboot": "EPERM",
    "socket(AF_ALG)": "EPERM", "socket(AF_VSOCK)": "EPERM",
    "i386 int 0x80": "SIGSYS", "x32 syscall": "SIGSYS",  # no compat entry points: the caller is killed
}
"""What hostile_task.py's attempts get: EPERM from the filter's default action, ENOSYS for clone3."""

WORK = {"threads": "ok", "subprocess": "ok", "fork": "ok", "asyncio": "ok", "sockets": "ok"}
"""hostile_task.py's ordinary work, all of it working."""


def hostile_app(state_dir: Path) -> Path:
    """``state_dir/app`` with the counter, hostile_task.py and hog_task.py."""
    app = counter_app(state_dir)
    for name in ("hostile_task.py", "hog_task.py"):
        shutil.copy(HERE / name, app / name)
    return app


def reports(agent, run_id: str, after: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
    """The JSON lines a run printed, from byte ``after`` of its stdout log on."""
    path = agent.mgr.run_log(run_id, "stdout")
    text = path.read_text()[after:] if path.exists() else ""
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
