"""Containers are hardened and limited by the task's settings."""

from __future__ import annotations

import ast
import os
import signal
from pathlib import Path

from torpor.agent import Limits

PROBE = r"""
import os, socket, sys
report = {}
report["uid"] = os.getuid()
report["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
report["nnp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
try:
    open("/usr/torpor-write-test", "w")
    report["root_writable"] = True
except OSError:
    report["root_writable"] = False
report["tmp_write"] = {}
for d in ("/tmp", "/workspace", "/dev/shm"):
    try:
        with open(d + "/probe", "w") as f:
            f.write("x")
        report["tmp_write"][d] = "ok"
    except OSError as exc:
        report["tmp_write"][d] = exc.strerror
report["tmp_modes"] = {d: oct(os.stat(d).st_mode & 0o7777) for d in ("/tmp", "/workspace", "/dev/shm")}
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.unshare(0x10000000)  # CLONE_NEWUSER
report["unshare"] = ctypes.get_errno() if rc != 0 else "allowed"
rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
report["mount"] = ctypes.get_errno() if rc != 0 else "allowed"
print(report, flush=True)
blob = bytearray(200 << 20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
print("survived 200 MB", flush=True)
"""


def _start_script(agent, state_dir: Path, run_id: str, source: str, limits: Limits):  # type: ignore[no-untyped-def]
    """Start ``source`` as /app/main.py of a container for ``run_id`` under ``limits``."""
    app = state_dir / f"{run_id}-app"
    app.mkdir(mode=0o755)
    (app / "main.py").write_text(source)
    return agent.start(run_id=run_id, args=["/usr/bin/python3", "/app/main.py"], app_dir=app, limits=limits)


def test_hardening_and_memory_limit(make_agent, file_store, state_dir):
    agent = make_agent(file_store)
    c = _start_script(agent, state_dir, "run-limits", PROBE, Limits(memory_bytes=64 << 20, pids=64))
    code = c.wait(timeout=60)
    out = agent.mgr.run_log("run-limits", "stdout").read_text()
    report = ast.literal_eval(out.splitlines()[0])  # the probe prints a dict literal
    assert report["uid"] == 1000
    assert int(report["caps"], 16) == 0 and report["nnp"] == "1"
    assert report["root_writable"] is False
    # Each tmpfs has the mode its mount asks for (runc 1.1 would give it its mount point's mode).
    assert report["tmp_modes"] == {"/tmp": "0o1777", "/workspace": "0o700", "/dev/shm": "0o1777"}
    assert report["tmp_write"] == {"/tmp": "ok", "/workspace": "ok", "/dev/shm": "ok"}
    assert report["unshare"] == 1 and report["mount"] == 1  # EPERM from the seccomp profile
    # 200 MB against a 64 MB limit: the kernel kills it.
    assert "survived" not in out and code == 137, (code, out)
    # The agent tells the OOM killer's 137 apart (agent/_oom.py), after runc removed the container's cgroup.
    assert agent.mgr.oom_killed(c) is True


def test_a_sigkill_from_elsewhere_is_not_taken_for_the_oom_killer(make_agent, file_store, state_dir):
    agent = make_agent(file_store)
    c = agent.start(run_id="run-killed", args=["/usr/bin/python3", "-c", "import time; time.sleep(60)"],
                    limits=Limits(memory_bytes=64 << 20, pids=64))
    os.kill(c.pid, signal.SIGKILL)
    assert c.wait(timeout=30) == 137
    assert agent.mgr.oom_killed(c) is False


CPU_PROBE = r"""
import time
t0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - t0 < 2.0:
    pass
print(round((time.process_time() - c0) / (time.monotonic() - t0), 3), flush=True)
"""


def test_cpus_sets_a_cpu_quota_the_task_cannot_exceed(make_agent, file_store, state_dir):
    """@task(cpus=0.5): the container's CFS quota is half a core, and a busy loop gets no more than that."""
    agent = make_agent(file_store)
    c = _start_script(agent, state_dir, "run-cpu", CPU_PROBE, Limits(cpus=0.5, pids=64))
    root = Path("/sys/fs/cgroup")
    relative = f"{agent.mgr.cgroup_parent}/{c.id}"
    if (root / "cgroup.controllers").exists():  # cgroup v2
        assert (root / relative / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (root / "cpu" / relative / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (root / "cpu" / relative / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert c.wait(timeout=60) == 0
    share = float(agent.mgr.run_log("run-cpu", "stdout").read_text().split()[0])
    assert share <= 0.6, f"a task limited to half a core used {share:.2f} of one"
