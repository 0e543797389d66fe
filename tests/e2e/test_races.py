"""The races users of checkpoint-at-wait systems report most, hit on purpose.

The agent is started with fault points that hold it at an exact moment
(torpor/_faults.py): before CRIU starts a dump, after the snapshot is durable
but before the checkpoint is reported, before a restore downloads, and after
a restored process runs again but before the agent reports the restore.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually

HOLD = 3.0


@pytest.fixture(scope="module")
def slow() -> Iterator[Stack]:
    faults = (f"agent.before_dump=sleep:{HOLD},agent.before_record=sleep:{HOLD},agent.before_restore=sleep:{HOLD},"
              f"agent.before_restored_report=sleep:{HOLD}")
    yield from make_stack(1, "--slots", "4", "--suspend-threshold", "2", env={"TORPOR_FAULTS": faults})


def event_types(stack: Stack, run_id: str) -> list[str]:
    return [e["type"] for e in stack.cli_json("runs", "show", run_id)["events"]]


def token_of(stack: Stack, run_id: str) -> str:
    run = assert_eventually(lambda: (r := stack.cli_json("runs", "show", run_id)).get("metadata") and r, timeout=60)
    return run["metadata"]["token"]


def test_token_completed_while_the_dump_is_under_way(slow):
    run_id = trigger(slow, "token-wait", {})
    token = token_of(slow, run_id)
    assert_eventually(lambda: "waiting" in event_types(slow, run_id), timeout=30)
    slow.cli("tokens", "complete", token, "--data", '{"n": 1}')  # the agent is holding before CRIU
    done = wait_status(slow, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert done["output"] == {"data": {"n": 1}}, done


def test_token_completed_after_upload_before_the_checkpoint_is_recorded(slow):
    run_id = trigger(slow, "token-wait", {})
    token = token_of(slow, run_id)
    assert_eventually(lambda: "waiting" in event_types(slow, run_id), timeout=30)
    # Past the dump hold, inside the record hold.
    import time

    time.sleep(HOLD + 0.8)
    slow.cli("tokens", "complete", token, "--data", '"late"')
    done = wait_status(slow, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
    assert done["output"] == {"data": "late"}, done


def test_child_finishes_while_the_parent_is_being_dumped(slow):
    run_id = trigger(slow, "parent", {})
    done = wait_status(slow, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=180)
    assert done["status"] == "COMPLETED", done
    assert done["output"]["one"] == 10


def test_cancel_during_suspension(slow):
    run_id = trigger(slow, "big-state", {"mb": 1, "seconds": 60})
    wait_status(slow, run_id, {"SUSPENDING"}, timeout=60)
    slow.cli("runs", "cancel", run_id)
    wait_status(slow, run_id, {"CANCELED"}, timeout=30)
    assert_eventually(lambda: not [c for c in slow.runc_list(slow.agents[0]) if c["id"].startswith(run_id)],
                      timeout=30, msg="a canceled run's container is still there")
    assert_eventually(lambda: slow.cli_json("agents", "list")[0]["slots_used"] == 0, timeout=30)


def test_cancel_during_restore(slow):
    run_id = trigger(slow, "big-state", {"mb": 1, "seconds": 3})
    wait_status(slow, run_id, {"RESTORING"}, timeout=90)
    slow.cli("runs", "cancel", run_id)
    wait_status(slow, run_id, {"CANCELED"}, timeout=30)
    assert_eventually(lambda: not [c for c in slow.runc_list(slow.agents[0]) if c["id"].startswith(run_id)],
                      timeout=30, msg="a run canceled during its restore still has a container")
    assert_eventually(lambda: slow.cli_json("agents", "list")[0]["slots_used"] == 0, timeout=30)
    assert slow.cli_json("runs", "show", run_id)["status"] == "CANCELED"


def test_a_restored_thread_asks_for_a_wait_before_the_restore_is_reported(slow):
    # The agent holds HOLD seconds between the restored process running again and RunStarted: the second
    # thread's wait comes in that gap, and must reach the coordinator after the report, not be dropped.
    # The second wait outlasts the hold by more than the suspend threshold: it suspends the run again.
    run_id = trigger(slow, "restless", {"seconds": 3, "second": HOLD + 5})
    done = wait_status(slow, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED" and done["output"] == {"second_wait_done": True}, done
    assert event_types(slow, run_id).count("restored") >= 2, event_types(slow, run_id)
