"""Scenario 7: the agent's image directory (CRIU's scratch) is a small tmpfs that fills up during a dump.

The checkpoint fails; the run does not: a checkpoint() returns and the task
goes on, a suspend is served in place. Nothing is spent, and the failed
dump leaves nothing behind, on the tmpfs or in the store.
"""

from __future__ import annotations

from harness_checker import Checker, Expect
from harness_stack import Stack


def test_image_dir_full_during_dumps(stack: Stack, checker: Checker) -> None:
    tmpfs = stack.small_tmpfs("a1-images", "16m")
    stack.restart_agent("a1", image_dir=tmpfs)
    loop = stack.trigger("ckpt-loop", steps=4, pause=0.1, ballast_mb=40)
    waiter = stack.trigger("long-wait", steps=4, wait=3, wait_after=2, ballast_mb=40)
    for r in (loop, waiter):
        assert stack.wait_status(r, "RUNNING", "SUSPENDING", "COMPLETED").agent == "a1"
    checker.verify([Expect(loop, "ckpt-loop", 4), Expect(waiter, "long-wait", 4)])
    assert not any(tmpfs.iterdir()), list(tmpfs.iterdir())
