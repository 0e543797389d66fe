"""RunSlot's answers to the task, for a task restored here from a checkpoint taken while it waited."""

from __future__ import annotations

import threading

from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent._runs import Outcome, RunSlot


def _slot(sent: list, checkpoints: list) -> RunSlot:  # type: ignore[type-arg]
    spec = ap.RunSpec(run=ap.RunRef(run_id="run_1", generation=2), task="t", attempt=1)
    slot = RunSlot(spec=spec, send=sent.append, suspend_threshold=5.0,
                   request_checkpoint=lambda slot, wait_id: checkpoints.append(wait_id))
    slot.reported.set()
    return slot


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


def _wait_in_thread(slot: RunSlot, wait_id: str) -> tuple[threading.Thread, list]:  # type: ignore[type-arg]
    got: list = []
    req = rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id=wait_id, token_id="tok_1"))
    t = threading.Thread(target=lambda: got.append(slot.handle(req)))
    t.start()
    return t, got


def test_a_wait_asked_before_the_start_is_reported_goes_after_the_report():
    """A restored task's thread asks for a wait while the agent has not yet sent RunStarted (the order is
    forced here): sent first, the coordinator would find the run RESTORING, ignore it, and the task would
    wait forever."""
    sent: list = []
    spec = ap.RunSpec(run=ap.RunRef(run_id="run_1", generation=2), task="t", attempt=1)
    slot = RunSlot(spec=spec, send=sent.append, suspend_threshold=5.0, request_checkpoint=lambda *a: None)
    t, got = _wait_in_thread(slot, "w1")
    t.join(timeout=0.5)
    assert t.is_alive() and sent == [], "the wait was sent before the run's start was reported"
    slot.report_started(ap.AgentMessage(run_started=ap.RunStarted(run=slot.ref(), restored=True)))
    t.join(timeout=5)
    assert [m.WhichOneof("msg") for m in sent] == ["run_started", "wait_requested"]
    assert got[0].wait_accepted == rt.WaitAccepted(resolved=False)


def test_a_request_held_for_a_run_that_ends_instead_is_refused():
    sent: list = []
    spec = ap.RunSpec(run=ap.RunRef(run_id="run_1", generation=1), task="t", attempt=1)
    slot = RunSlot(spec=spec, send=sent.append, suspend_threshold=5.0, request_checkpoint=lambda *a: None)
    t, got = _wait_in_thread(slot, "w1")
    slot.stopping = "stale_generation"  # named stale while runc launched it: never reported
    t.join(timeout=5)
    assert not t.is_alive() and sent == []
    assert "stale_generation" in got[0].error
