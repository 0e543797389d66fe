"""A host dies mid-run: the run continues on another agent from its latest checkpoint."""

from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import psutil
import pytest

from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually


@pytest.fixture(scope="module")
def pair() -> Iterator[Stack]:
    yield from make_stack(2, "--slots", "2")


def agent_pid(stack: Stack, name: str) -> int:
    """The agent process whose command line names it (torpor dev starts one per agent)."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "agent" in cmd and name in cmd and str(stack.dir) in " ".join(cmd):
            return p.info["pid"]
    raise AssertionError(f"no process for {name}")


def test_run_survives_its_host_from_the_latest_checkpoint(pair):
    run_id = trigger(pair, "steady", {"steps": 60})  # ~15 s of work
    run = wait_status(pair, run_id, {"RUNNING"}, timeout=60)
    victim = run["agent"]
    assert_eventually(lambda: len(pair.cli_json("runs", "show", run_id)["checkpoints"]) >= 2, timeout=30)
    killed_at = time.time()
    os.kill(agent_pid(pair, victim), signal.SIGKILL)  # the host dies; torpor dev kills its containers with it
    done = wait_status(pair, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    # The same process state went on: it started before the crash, counted to the end, no attempt spent.
    assert out["started"] < killed_at and out["count"] == 60 and out["attempt"] == 1, out
    restored = [e for e in done["events"] if e["type"] == "restored"]
    assert restored and restored[-1]["agent"] != victim, done["events"]
    assert any(c["kind"] == "PERIODIC" for c in done["checkpoints"])


def _kill_once_checkpointed(stack: Stack, run_id: str, kind: str) -> tuple[str, float]:
    run = wait_status(stack, run_id, {"RUNNING"}, timeout=60)
    assert_eventually(lambda: sum(c["kind"] == kind for c in stack.cli_json("runs", "show", run_id)["checkpoints"]) >= 2,
                      timeout=30)
    killed_at = time.time()
    os.kill(agent_pid(stack, run["agent"]), signal.SIGKILL)
    return run["agent"], killed_at


def _restored_from(done: dict, victim: str) -> str:
    restored = [e for e in done["events"] if e["type"] == "restored"]
    assert restored and restored[-1]["agent"] != victim, done["events"]
    ckpt_id = restored[-1]["detail"].split()[2]  # "from checkpoint ID in N ms"
    return next(c["kind"] for c in done["checkpoints"] if c["id"] == ckpt_id)


@pytest.fixture
def fresh_pair() -> Iterator[Stack]:
    """Two agents, both alive: each test here kills one."""
    yield from make_stack(2, "--slots", "2")


@pytest.mark.parametrize("task_id, steps, kind", [
    # The image holds the task blocked in checkpoint(); on the new host that call returns.
    ("save-loop", 40, "ON_DEMAND"),
    # A periodic checkpoint caught the task in an in-place wait; the new host serves that wait.
    ("short-waits", 12, "PERIODIC"),
])
def test_restored_from_inside_a_wait_the_task_goes_on(fresh_pair, task_id, steps, kind):
    run_id = trigger(fresh_pair, task_id, {"steps": steps})
    victim, killed_at = _kill_once_checkpointed(fresh_pair, run_id, kind)
    done = wait_status(fresh_pair, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    assert out["started"] < killed_at and out["count"] == steps and out["attempt"] == 1, out
    assert _restored_from(done, victim) == kind


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(fresh_pair):
    """The newest snapshot fails verification on the new host: the run goes on from the one before it."""
    run_id = trigger(fresh_pair, "steady", {"steps": 48})
    victim, killed_at = _kill_once_checkpointed(fresh_pair, run_id, "PERIODIC")
    # A killed agent reports nothing more: once the recorded checkpoints stop changing, the newest is known.
    ids = assert_eventually(lambda: (a := [c["id"] for c in fresh_pair.cli_json("runs", "show", run_id)["checkpoints"]])
                            == [c["id"] for c in fresh_pair.cli_json("runs", "show", run_id)["checkpoints"]] and a,
                            timeout=10)
    time.sleep(1.0)
    assert [c["id"] for c in fresh_pair.cli_json("runs", "show", run_id)["checkpoints"]] == ids
    newest = fresh_pair.dir / "store" / "runs" / run_id / "checkpoints" / ids[-1] / "snapshot.sealed"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    done = wait_status(fresh_pair, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    assert out["started"] < killed_at and out["count"] == 48 and out["attempt"] == 1, out
    unusable = [e for e in done["events"] if e["type"] == "checkpoint_unusable"]
    assert len(unusable) == 1 and ids[-1] in unusable[0]["detail"], done["events"]
    restored = [e for e in done["events"] if e["type"] == "restored"]
    assert restored and restored[-1]["detail"].split()[2] == ids[-2], (restored, ids)
