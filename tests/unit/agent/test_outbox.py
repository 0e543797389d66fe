"""The agent's outbox: reports numbered, kept until acknowledged, sent again first after a reconnect."""

from __future__ import annotations

import threading
import time

from torpor._proto.v1 import agent_pb2 as ap
from torpor.agent._daemon import Agent
from torpor.agent._outbox import Outbox


def _ref(run: str, gen: int = 1) -> ap.RunRef:
    return ap.RunRef(run_id=run, generation=gen)


def _take(stream, n: int) -> list[ap.AgentMessage]:  # type: ignore[no-untyped-def]
    return [next(stream) for _ in range(n)]


def _stream(box: Outbox, stopped: threading.Event):  # type: ignore[no-untyped-def]
    return box.stream(register=lambda: ap.AgentMessage(register=ap.Register(name="a", incarnation=box.incarnation)),
                      heartbeat=lambda: ap.AgentMessage(heartbeat=ap.Heartbeat()), period=lambda: 3600.0,
                      stopped=stopped)


def test_reports_are_numbered_and_replayed_in_order_until_acknowledged():
    box, stopped = Outbox(), threading.Event()
    box.send(ap.AgentMessage(run_started=ap.RunStarted(run=_ref("r1"))))
    box.send(ap.AgentMessage(child_trigger=ap.ChildTrigger(run=_ref("r1"), request_id="q")))  # a question: unnumbered
    box.send(ap.AgentMessage(log=ap.LogData(run=_ref("r1"), data=b"x")))
    first = _take(_stream(box, stopped), 4)
    # Reports queued before the stream opened go right after the Register; the question follows.
    assert [(m.WhichOneof("msg"), m.seq) for m in first] == [("register", 0), ("run_started", 1), ("log", 2),
                                                             ("child_trigger", 0)]
    box.acked(1)
    box.send(ap.AgentMessage(run_exited=ap.RunExited(run=_ref("r1"))))
    # The stream broke: a new one sends Register, then 2 and 3 (unacknowledged), and 3 only once.
    second = _stream(box, stopped)
    assert [(m.WhichOneof("msg"), m.seq) for m in _take(second, 3)] == [("register", 0), ("log", 2),
                                                                        ("run_exited", 3)]
    box.send(ap.AgentMessage(log=ap.LogData(run=_ref("r1"), data=b"y")))
    assert [(m.WhichOneof("msg"), m.seq) for m in _take(second, 1)] == [("log", 4)]
    box.acked(4)
    assert box.unacked() == []


def test_a_run_stays_held_until_its_exit_is_acknowledged():
    """A heartbeat must not say the run is gone while the report of how it ended may still be on its way."""
    agent = object.__new__(Agent)
    agent.runs = {}
    agent.lock = threading.RLock()
    agent.outbox = Outbox()
    agent.send(ap.AgentMessage(run_exited=ap.RunExited(run=_ref("done", 4), has_result=True)))
    assert [(r.run_id, r.generation) for r in agent.holding()] == [("done", 4)]
    agent.outbox.acked(1)
    assert agent.holding() == []


def test_a_confirmed_send_returns_once_its_report_is_acknowledged():
    box = Outbox()
    box.send(ap.AgentMessage(log=ap.LogData(run=_ref("r"), data=b"x")))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(
        box.send_confirmed(ap.AgentMessage(token_registered=ap.TokenRegistered(run=_ref("r"), token_id="t")), 5)))
    t.start()
    box.acked(1)  # an earlier report: not enough
    t.join(0.2)
    assert t.is_alive() and result == []
    box.acked(2)
    t.join(5)
    assert result == [True]
    assert box.send_confirmed(ap.AgentMessage(log=ap.LogData(run=_ref("r"))), 0.05) is False  # never acknowledged


def test_create_token_returns_only_once_the_coordinator_has_the_token():
    from torpor._proto.v1 import runtime_pb2 as rt
    from torpor.agent._runs import RunSlot

    confirmed: list[str] = []

    def confirm(msg: ap.AgentMessage, timeout: float) -> bool:
        confirmed.append(msg.token_registered.token_id)
        return msg.token_registered.token_id != "never"

    slot = RunSlot(spec=ap.RunSpec(run=_ref("r")), send=lambda m: None, suspend_threshold=5,
                   request_checkpoint=lambda *a: None, send_confirmed=confirm)
    slot.reported.set()
    resp = slot.handle(rt.RuntimeRequest(create_token=rt.RuntimeCreateToken()))
    assert resp.token.token_id.startswith("tok_") and confirmed == [resp.token.token_id]

    slot.send_confirmed = lambda msg, timeout: False  # the coordinator never committed it
    refused = slot.handle(rt.RuntimeRequest(create_token=rt.RuntimeCreateToken()))
    assert "did not record token" in refused.error and not refused.HasField("token")


def test_a_command_sent_again_is_acknowledged_again_and_taken_once():
    box = Outbox()
    assert box.take_command(7) is True
    assert box.take_command(7) is False  # the same command after a reconnect
    assert box.take_command(8) is True
    acks = [m.command_ack.cmd_ids[0] for m in _take(_stream(box, threading.Event()), 4)[1:]]
    assert acks == [7, 7, 8] and box.unacked() == []  # acknowledgements are not reports themselves


def test_a_dead_stream_waiting_for_the_next_message_cannot_take_a_report_from_its_successor():
    """The race the fault harness found: the broken stream's sender still waits for a message when the
    new stream has replayed; a report queued then went to the dead stream only and was never applied."""
    box, stopped = Outbox(), threading.Event()
    old = _stream(box, stopped)
    _take(old, 1)  # Register
    taken: list[ap.AgentMessage] = []
    waiting = threading.Thread(target=lambda: taken.append(next(old)))  # gRPC's sender, blocked
    waiting.start()
    new = _stream(box, stopped)
    _take(new, 1)  # the reconnect: Register, nothing to replay yet
    got: list[ap.AgentMessage] = []
    reader = threading.Thread(target=lambda: got.append(next(new)))  # the new sender waits too
    reader.start()
    time.sleep(0.2)  # both senders are waiting now (nothing observable to wait on: this is the interleaving)
    box.send(ap.AgentMessage(run_exited=ap.RunExited(run=_ref("r1"))))
    waiting.join(timeout=5)
    reader.join(timeout=5)
    assert [m.seq for m in got] == [1], "the new stream never sent the report"
    stopped.set()
