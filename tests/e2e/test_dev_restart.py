"""`torpor dev` restarted on the same data directory keeps its runs; suspended ones resume."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psutil

from e2e_support import Stack, _need_stack, trigger, wait_status
from helpers import free_port

PROJECT = Path(__file__).resolve().parent / "project"


def test_restart_keeps_suspended_runs_and_leaves_nothing_behind():
    _need_stack()
    work = Path(tempfile.mkdtemp(prefix="torpor-e2e-restart-", dir="/var/tmp"))
    work.chmod(0o711)
    port = free_port()
    first = Stack(work / "data", port, 1)
    second = Stack(work / "data", port, 1)
    try:
        first.start("--suspend-threshold", "2")
        first.cli("deploy", str(PROJECT))
        run_id = trigger(first, "big-state", {"mb": 5, "seconds": 15})
        wait_status(first, run_id, {"SUSPENDED"}, timeout=60)
        done_before = trigger(first, "short-wait", {"seconds": 0.1})
        wait_status(first, done_before, {"COMPLETED"}, timeout=60)
        first.stop()
        # Nothing of the stack is left: no container, no process holding the data directory.
        assert first.runc_list("dev-agent-1") == []
        left = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                if any(str(work) in part for part in (p.info["cmdline"] or []))]
        assert not left, left

        second.start("--suspend-threshold", "2")
        assert second.cli_json("runs", "show", done_before)["status"] == "COMPLETED"
        done = wait_status(second, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
        assert done["status"] == "COMPLETED" and done["output"]["before"] == done["output"]["after"], done
    finally:
        first.stop()
        second.stop()
        shutil.rmtree(work, ignore_errors=True)
