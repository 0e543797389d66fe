"""RunSlot's answers to the task, for a task restored here from a checkpoint taken while it waited."""

from __future__ import annotations

from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent._runs import Outcome, RunSlot


def _slot(sent: list, checkpoints: list) -> RunSlot:  # type: ignore[type-arg]
    spec = ap.RunSpec(run=ap.RunRef(run_id="run_1", generation=2), task="t", attempt=1)
    return RunSlot(spec=spec, send=sent.append, suspend_threshold=5.0,
                   request_checkpoint=lambda slot, wait_id: checkpoints.append(wait_id))


def _result(slot: RunSlot, wait_id: str) -> rt.WaitOutcome:
    return slot.handle(rt.RuntimeRequest(wait_result=rt.RuntimeWaitResult(wait_id=wait_id))).wait_outcome


def test_a_wait_this_agent_never_saw_is_unknown_not_pending():
    slot = _slot([], [])
    assert _result(slot, "w-from-the-image") == rt.WaitOutcome(ready=False, unknown=True)
    slot.waits["w-pending"] = None
    assert _result(slot, "w-pending") == rt.WaitOutcome(ready=False)
    slot.waits["w-done"] = Outcome(result_json="7")
    assert _result(slot, "w-done") == rt.WaitOutcome(ready=True, result_json="7")
    # Consumed: asking again is a question about a wait this agent no longer holds.
    assert _result(slot, "w-done").unknown


def test_a_checkpoint_asked_again_after_a_restore_is_done_at_once():
    sent: list = []
    checkpoints: list = []
    slot = _slot(sent, checkpoints)
    resp = slot.handle(rt.RuntimeRequest(checkpoint=rt.RuntimeCheckpoint(wait_id="c1", after_restore=True)))
    assert resp.wait_accepted.resolved
    assert _result(slot, "c1") == rt.WaitOutcome(ready=True, result_json="true")
    assert checkpoints == [] and sent == []  # no second dump, nothing to tell the coordinator


def test_a_short_wait_sent_again_re_arms_here():
    import time

    slot = _slot([], [])
    resp = slot.handle(rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id="w1", until_unix=time.time() - 1)))
    assert not resp.wait_accepted.resolved
    deadline = time.monotonic() + 5
    while _result(slot, "w1") == rt.WaitOutcome(ready=False) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slot.waits == {}  # its due time had passed: served (and consumed) at once
