"""Scenario 1: a host dies — kill -9 of its agent and of every process the agent started, its containers removed.

The run goes on elsewhere from its latest checkpoint (or starts over when it
had none): nothing lost, nothing redone beyond that checkpoint, one copy at a
time, no attempt spent. The host is lost, so a host failure is.
"""

from __future__ import annotations

import signal

from harness_checker import Checker, Expect
from harness_stack import Stack, status_name
from helpers import assert_eventually

from torpor._proto.v1 import common_pb2

ON_DEMAND, PERIODIC = common_pb2.ON_DEMAND, common_pb2.PERIODIC


def _on_a1(stack: Stack, *run_ids: str) -> None:
    for run_id in run_ids:
        run = stack.wait_status(run_id, "RUNNING", "SUSPENDING", "SUSPENDED")
        assert run.agent == "a1", f"run {run_id} started on {run.agent}, not a1 (the agent with most slots)"


def _checkpoints(stack: Stack, run_id: str, kind: int) -> int:
    return sum(c.kind == kind for c in stack.run(run_id).checkpoints)


def _restored_elsewhere(stack: Stack, run_id: str, victim: str) -> None:
    run = stack.run(run_id)
    restored = [e for e in run.events if e.type == "restored"]
    assert restored and restored[-1].agent != victim, [f"{e.type} {e.agent} {e.detail}" for e in run.events]


def test_killed_in_a_checkpoint_loop_and_in_a_short_wait(stack: Stack, checker: Checker) -> None:
    loop = stack.trigger("ckpt-loop", steps=16, pause=0.1)
    short = stack.trigger("short-waits", steps=10, short=0.5)
    _on_a1(stack, loop, short)
    # loop's images are taken inside checkpoint(); short's periodic ones (mostly) inside an in-place wait.
    assert_eventually(lambda: _checkpoints(stack, loop, ON_DEMAND) >= 2 and _checkpoints(stack, short, PERIODIC) >= 1,
                      timeout=30, msg="no checkpoints to restore from")
    stack.agents["a1"].crash()
    checker.verify([Expect(loop, "ckpt-loop", 16, host_lost=True),
                    Expect(short, "short-waits", 10, host_lost=True, periodic=1.0)])
    _restored_elsewhere(stack, loop, "a1")
    _restored_elsewhere(stack, short, "a1")


def test_killed_before_a_suspend_dump(stack: Stack, checker: Checker) -> None:
    """The dump was decided (SUSPENDING, runtime socket paused) but CRIU has not started: no checkpoint yet."""
    a1 = stack.restart_agent("a1", faults="agent.before_dump=sleep:60")
    run = stack.trigger("long-wait", steps=4, wait=3, wait_after=2)
    _on_a1(stack, run)
    a1.wait_log("fault point agent.before_dump")
    assert status_name(stack.run(run)) == "SUSPENDING"
    a1.crash()
    checker.verify([Expect(run, "long-wait", 4, host_lost=True)])


def test_killed_while_criu_dumps(stack: Stack, checker: Checker) -> None:
    """A checkpoint() of a run with 48 MB of memory; the host dies while CRIU is writing the image.

    crash() stops the whole tree with SIGSTOP first, so CRIU seen running here is still mid-dump when it dies.
    """
    a1 = stack.agents["a1"]
    run = stack.trigger("ckpt-loop", steps=8, pause=0.1, ballast_mb=48)
    _on_a1(stack, run)
    assert_eventually(lambda: _checkpoints(stack, run, ON_DEMAND) >= 2, timeout=60)
    assert_eventually(lambda: a1.running("criu"), timeout=30, interval=0.005, msg="never caught CRIU dumping")
    a1.crash()
    checker.verify([Expect(run, "ckpt-loop", 8, host_lost=True)])
    _restored_elsewhere(stack, run, "a1")


def test_killed_mid_upload(stack: Stack, checker: Checker) -> None:
    """The snapshot is half in the store (a multipart upload under way) when the host dies."""
    a1 = stack.agents["a1"]
    assert stack.minio is not None and stack.minio.proc is not None
    run = stack.trigger("ckpt-loop", steps=8, pause=0.1, ballast_mb=48)
    _on_a1(stack, run)
    assert_eventually(lambda: _checkpoints(stack, run, ON_DEMAND) >= 2, timeout=60)
    prefix = f"store/runs/{run}/"
    assert_eventually(lambda: stack.multipart_uploads(prefix), timeout=30, interval=0.01,
                      msg="never caught an upload under way")
    stack.minio.proc.signal(signal.SIGSTOP)  # the upload cannot finish now
    try:
        a1.crash()
    finally:
        stack.minio.proc.signal(signal.SIGCONT)
    checker.verify([Expect(run, "ckpt-loop", 8, host_lost=True)])
    _restored_elsewhere(stack, run, "a1")


def test_killed_mid_restore(stack: Stack, checker: Checker) -> None:
    """A suspended run's wait is over; the agent restoring it dies before the download."""
    a1 = stack.restart_agent("a1", faults="agent.before_restore=sleep:60")
    run = stack.trigger("long-wait", steps=4, wait=2.5, wait_after=2)
    _on_a1(stack, run)
    a1.wait_log("fault point agent.before_restore", timeout=30)
    restoring = stack.run(run)
    assert status_name(restoring) == "RESTORING" and restoring.agent == "a1", restoring
    a1.crash()
    checker.verify([Expect(run, "long-wait", 4, host_lost=True)])
    _restored_elsewhere(stack, run, "a1")
