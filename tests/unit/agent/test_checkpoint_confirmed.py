"""torpor.checkpoint() returns to the task only once the coordinator has recorded the checkpoint.

Found by the fault harness (a1 cut off by a link down): the snapshot was in
the store and the task's checkpoint() had returned, but the record never
reached the coordinator, which restored the run from the checkpoint before.
The interleaving is forced here: the report is sent and its acknowledgement
held back; the call must still be waiting, and return when the ack comes (or
give up when the run leaves the agent).
"""

from __future__ import annotations

import threading
import time

from torpor._proto.v1 import common_pb2 as cm
from torpor.agent._checkpoints import CheckpointCommands
from torpor.agent._outbox import Outbox


class _Slot:
    run_id = "run-1"
    suspending = False

    def __init__(self) -> None:
        self.dump_lock = threading.Lock()

    def ref(self):  # type: ignore[no-untyped-def]
        from torpor._proto.v1 import agent_pb2 as ap

        return ap.RunRef(run_id=self.run_id, generation=1)


class _Agent(CheckpointCommands):
    def __init__(self) -> None:
        self.outbox = Outbox()
        self.stopped = threading.Event()
        self.slot = _Slot()
        self.runs = {"run-1": self.slot}

    def _dump(self, slot, *, kind, leave_running):  # type: ignore[no-untyped-def]
        return cm.Checkpoint(id="ck-1", kind=kind, location="runs/run-1/checkpoints/ck-1/manifest.json")


def _call(agent: _Agent) -> tuple[threading.Thread, list[bool]]:
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(agent._checkpoint_running(agent.slot, cm.ON_DEMAND, confirm=True)))
    t.start()
    return t, got


def test_the_call_waits_for_the_coordinators_ack():
    agent = _Agent()
    t, got = _call(agent)
    time.sleep(0.5)  # the report is sent (numbered 1) and nobody acknowledges it
    assert t.is_alive() and got == [], "checkpoint() returned before the coordinator recorded the checkpoint"
    assert [m.WhichOneof("msg") for m in agent.outbox.unacked()] == ["checkpoint_recorded"]
    agent.outbox.acked(1)
    t.join(timeout=5)
    assert got == [True]


def test_the_call_gives_up_when_the_run_leaves_the_agent():
    agent = _Agent()
    t, got = _call(agent)
    time.sleep(0.3)
    del agent.runs["run-1"]  # killed, fenced or moved: nobody is left to return to
    t.join(timeout=5)
    assert got == [False]


def test_periodic_and_coordinator_asked_checkpoints_do_not_wait():
    agent = _Agent()
    assert agent._checkpoint_running(agent.slot, cm.PERIODIC) is True
    assert len(agent.outbox.unacked()) == 1
