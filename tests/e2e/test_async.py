"""`async def` tasks through `torpor dev`: a suspension freezes the event loop, and all of it goes on."""

from __future__ import annotations

import pytest

from e2e_support import trigger, wait_status
from helpers import assert_eventually

DONE = {"COMPLETED", "FAILED", "CRASHED"}


def test_three_coroutines_one_waiting_on_a_token_all_go_on_after_the_restore(stack):
    run_id = trigger(stack, "async-trio", {})
    run = wait_status(stack, run_id, {"SUSPENDED"}, timeout=90)
    assert [c for c in run["checkpoints"] if c["kind"] == "SUSPEND"], run["checkpoints"]
    assert stack.runc_list("dev-agent-1") == [], "a suspended run keeps no container"
    token = assert_eventually(lambda: stack.cli_json("runs", "show", run_id)["metadata"].get("token"), timeout=10)
    stack.cli("tokens", "complete", token, "--data", '{"approved": true}')
    done = wait_status(stack, run_id, DONE, timeout=120)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    assert out["data"] == {"approved": True} and out["child"] == 20, out
    # Both counters ran before the suspension and again after the restore, beside the child's wait.
    assert all(n > 0 for n in out["before"].values()), out
    assert all(n >= 5 for n in out["after"].values()), out


@pytest.mark.parametrize("a,b", [(1.0, 1.5), (1.5, 1.0)])
def test_two_coroutines_waiting_at_once_both_return(stack, a, b):
    # The agent's wake-up signal reaches one thread of the process; before sdk/_runtime.py's _Waker, the
    # waiter it reached first slept on and the other never woke (caught with the waits in this order: 1.5, 1.0).
    run = wait_status(stack, trigger(stack, "async-pair", {"a": a, "b": b}), DONE, timeout=60)
    assert run["status"] == "COMPLETED", run
    first, second = run["output"]
    assert a <= first < a + 1.5 and b <= second < b + 1.5, run["output"]
