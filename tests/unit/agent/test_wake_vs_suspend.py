"""A WaitResolved and a SuspendRun for one wait, handled at once: a resume or a dump, never both.

The interleaving is forced with the named fault point ``agent.before_resolve``:
the WaitResolved handler has found no suspend under way and stops there while
the SuspendRun handler runs. Before the fix the two checks and acts were in
separate lock sections, the suspend began a dump of a run that was then
resumed, and its "suspended" exit reached a RUNNING run as a crash.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from torpor import _faults
from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import common_pb2 as cm
from torpor.agent._daemon import Agent
from torpor.agent._runs import RunSlot


def _agent_with_a_waiting_run() -> tuple[Agent, RunSlot, list[ap.AgentMessage], list[str]]:
    sent: list[ap.AgentMessage] = []
    dumps: list[str] = []
    spec = ap.RunSpec(run=ap.RunRef(run_id="run_1", generation=3), task="t", attempt=1)
    slot = RunSlot(spec=spec, send=sent.append, suspend_threshold=5.0, request_checkpoint=lambda *a: None)
    slot.reported.set()
    slot.container = SimpleNamespace(running=False, pid=0)  # type: ignore[assignment]
    slot.waits["w1"] = None  # the task asked for the wait; the coordinator said go ahead and dump
    agent = object.__new__(Agent)  # only the command handlers and their collaborators below
    agent.runs = {"run_1": slot}
    agent.send = sent.append  # type: ignore[method-assign]

    def dump(s: RunSlot, *, kind: int, leave_running: bool) -> cm.Checkpoint:
        dumps.append("dumped")
        return cm.Checkpoint(id="ck", kind=kind, location="runs/run_1/checkpoints/ck/manifest.json")

    agent._dump = dump  # type: ignore[method-assign]
    agent._drop = lambda s: None  # type: ignore[method-assign]
    return agent, slot, sent, dumps


def test_a_resume_and_a_dump_of_the_same_wait_exclude_each_other():
    agent, slot, sent, dumps = _agent_with_a_waiting_run()
    ref = ap.RunRef(run_id="run_1", generation=3)
    _faults.configure("agent.before_resolve=sleep:0.5")
    try:
        resolver = threading.Thread(target=agent._on_wait_resolved,
                                    args=(ap.WaitResolved(run=ref, wait_id="w1", result_json="1"),))
        resolver.start()
        time.sleep(0.1)  # the resolver has checked for a suspend and sits at the fault point
        agent._on_suspend(ap.SuspendRun(run=ref, wait_id="w1"))
        resolver.join()
    finally:
        _faults.configure("")
    kinds = [m.WhichOneof("msg") for m in sent]
    assert kinds == ["run_resumed"] and dumps == [], (kinds, dumps)
    assert slot.waits["w1"] is not None and not slot.suspending


def test_a_resolve_after_the_dump_began_is_left_to_the_coordinator():
    agent, slot, sent, dumps = _agent_with_a_waiting_run()
    ref = ap.RunRef(run_id="run_1", generation=3)
    agent._on_suspend(ap.SuspendRun(run=ref, wait_id="w1"))
    slot.suspending = True  # as while the dump is under way
    agent._on_wait_resolved(ap.WaitResolved(run=ref, wait_id="w1", result_json="1"))
    assert [m.WhichOneof("msg") for m in sent] == ["checkpoint_recorded", "run_exited"] and dumps == ["dumped"]
    assert slot.waits["w1"] is None  # not resolved here: the restore carries the result


def test_a_resolve_during_a_dump_that_then_fails_wakes_the_task_here():
    """The coordinator sends a wait's resolution once. Left aside while the dump ran, it must be applied when
    the dump fails and the run stays here; before the fix the task waited forever (run stuck SUSPENDING)."""
    agent, slot, sent, dumps = _agent_with_a_waiting_run()
    slot.container = SimpleNamespace(running=True, pid=0)  # type: ignore[assignment]
    woken: list[int] = []
    slot.wake = lambda: woken.append(1)  # type: ignore[method-assign]
    ref = ap.RunRef(run_id="run_1", generation=3)

    def dump_that_fails(s: RunSlot, *, kind: int, leave_running: bool) -> cm.Checkpoint:
        assert s.suspending
        agent._on_wait_resolved(ap.WaitResolved(run=ref, wait_id="w1", result_json="7"))  # arrives mid-dump
        assert [m.WhichOneof("msg") for m in sent] == []  # nothing done about it yet
        raise RuntimeError("CRIU failed")

    agent._dump = dump_that_fails  # type: ignore[method-assign]
    try:
        agent._on_suspend(ap.SuspendRun(run=ref, wait_id="w1"))
        raise AssertionError("the failed dump was not reported")
    except RuntimeError as exc:
        assert "CRIU failed" in str(exc)
    assert [m.WhichOneof("msg") for m in sent] == ["run_resumed"] and woken == [1]
    assert slot.waits["w1"] is not None and slot.waits["w1"].result_json == "7" and not slot.suspending
