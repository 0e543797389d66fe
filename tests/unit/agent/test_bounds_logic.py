"""The agent's bounds as pure logic: the log budget, the outbox's memory bound, open waits, frame limits."""

from __future__ import annotations

import threading

import click
import pytest
from helpers import assert_eventually

from torpor._errors import ConfigError
from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent._bounds import CONTROL_FRAME, AgentBounds, kind_of
from torpor.agent._logs import LogBudget, LogRelay
from torpor.agent._outbox import Outbox
from torpor.agent._runs import Outcome, RunSlot


def _ref(run: str) -> ap.RunRef:
    return ap.RunRef(run_id=run, generation=1)


def _stream(box: Outbox):  # type: ignore[no-untyped-def]
    return box.stream(register=lambda: ap.AgentMessage(register=ap.Register(name="a")),
                      heartbeat=lambda: ap.AgentMessage(heartbeat=ap.Heartbeat()), period=lambda: 3600.0,
                      stopped=threading.Event())


def test_the_budget_keeps_whole_lines_then_drops_and_counts():
    budget = LogBudget(limit=10)
    assert budget.admit(b"abc\n") == (b"abc\n", b"")
    keep, notice = budget.admit(b"defg\nhijk\nlmn\n")  # 6 bytes of room: one whole line fits
    assert keep == b"defg\n" and b"log budget of 10 bytes" in notice
    assert budget.admit(b"more\n") == (b"", b"")  # spent: nothing more, not even a short line
    assert budget.take_dropped() == len(b"hijk\nlmn\n") + len(b"more\n")
    assert budget.take_dropped() == 0  # each marker accounts for its own bytes
    assert b"14 bytes of output dropped" in budget.marker(14)


def test_a_restored_attempt_continues_its_budget():
    spent = LogBudget.of(ap.RunSpec(log_budget_bytes=100, log_bytes_used=100), AgentBounds())
    assert spent.admit(b"x\n") == (b"", b"")  # no second notice: the first start said it
    assert spent.take_dropped() == 2
    fresh = LogBudget.of(ap.RunSpec(), AgentBounds(log_budget_bytes=5))  # an older coordinator names none
    assert fresh.limit == 5


def test_a_full_outbox_drops_logs_with_a_counted_marker_and_never_a_report():
    box = Outbox(log_bytes=200)
    relay = LogRelay(box.send_log, _ref("r"), attempt=1)
    relay.relay("stdout", b"x" * 189 + b"\n")  # 190 of 200 bytes
    relay.relay("stdout", b"abcdef\n" * 7)  # 49 bytes do not fit: dropped and counted
    relay.relay("stderr", b"ghi\n")  # would fit, but the marker goes first and does not: counted too
    assert relay.lost == 53
    box.send(ap.AgentMessage(checkpoint_recorded=ap.CheckpointRecorded(run=_ref("r"))))  # reports always go
    box.acked(1)  # the first log chunk is acknowledged: room again
    relay.relay("stdout", b"j\n")
    sent = box.unacked()
    assert [m.WhichOneof("msg") for m in sent] == ["checkpoint_recorded", "log", "log"]
    marker, after = sent[1].log, sent[2].log
    assert marker.dropped_bytes == 53 and b"53 bytes of output dropped" in marker.data
    assert after.data == b"j\n" and after.dropped_bytes == 0
    assert [m.seq for m in sent] == [2, 3, 4]  # refused chunks took no number: no gap for the coordinator
    assert box.held_bytes()[0] == len(marker.data) + 2


def test_the_last_marker_goes_even_into_a_full_outbox():
    box = Outbox(log_bytes=4)
    relay = LogRelay(box.send_log, _ref("r"), attempt=2)
    relay.relay("stdout", b"1234")
    relay.relay("stdout", b"5678")
    relay.flush()  # the container's output ended
    box.send(ap.AgentMessage(run_exited=ap.RunExited(run=_ref("r"))))
    kinds = [(m.WhichOneof("msg"), m.log.dropped_bytes if m.HasField("log") else None) for m in box.unacked()]
    assert kinds == [("log", 0), ("log", 4), ("run_exited", None)]
    # A budget marker (a chunk standing for dropped bytes) is never refused either.
    relay.relay("stderr", b"[torpor] 9 bytes of output dropped\n", dropped=9)
    assert box.unacked()[-1].log.dropped_bytes == 9


def test_metadata_updates_are_coalesced_while_they_wait_and_precede_their_runs_exit():
    box = Outbox()
    for i in range(1000):
        box.send(ap.AgentMessage(metadata=ap.MetadataUpdate(run=_ref("r"), metadata_json=f'{{"i": {i}}}')))
    box.send(ap.AgentMessage(metadata=ap.MetadataUpdate(run=_ref("other"), metadata_json='{"x": 1}')))
    assert box.unacked() == []  # none numbered while no stream asks
    box.send(ap.AgentMessage(run_exited=ap.RunExited(run=_ref("r"))))
    sent = [next(s) for s in [_stream(box)] for _ in range(4)]
    got = [(m.WhichOneof("msg"), m.seq, m.metadata.metadata_json) for m in sent[1:]]
    # r's newest update is numbered right before r's exit; other's goes when nothing older is left.
    assert got == [("metadata", 1, '{"i": 999}'), ("run_exited", 2, ""), ("metadata", 3, '{"x": 1}')]
    assert box.held_bytes() == (0, len('{"i": 999}') + len('{"x": 1}'))
    box.acked(3)
    assert box.held_bytes() == (0, 0)


def test_unacknowledged_metadata_past_its_bound_waits_coalesced():
    box = Outbox(metadata_bytes=10)
    stream = _stream(box)
    next(stream)  # Register
    box.send(ap.AgentMessage(metadata=ap.MetadataUpdate(run=_ref("r"), metadata_json='{"a": 12345}')))
    assert next(stream).seq == 1  # 12 bytes held now, over 10
    for i in range(50):
        box.send(ap.AgentMessage(metadata=ap.MetadataUpdate(run=_ref("r"), metadata_json=f'{{"b": {i}}}')))
    box.send(ap.AgentMessage(run_started=ap.RunStarted(run=_ref("s"))))
    assert next(stream).WhichOneof("msg") == "run_started"  # the pending update waits for an ack
    box.acked(2)
    last = next(stream)
    assert last.metadata.metadata_json == '{"b": 49}' and last.seq == 3


def _slot(bounds: AgentBounds, taken: list[str], gate: threading.Event | None = None) -> RunSlot:
    def checkpoint(slot: RunSlot, wait_id: str) -> None:
        if gate is not None:
            gate.wait(10)
        taken.append(threading.current_thread().name + ":" + wait_id)
        slot.resolve(wait_id, Outcome("true"))

    slot = RunSlot(spec=ap.RunSpec(run=_ref("r"), attempt=1), send=lambda m: None, suspend_threshold=5.0,
                   request_checkpoint=checkpoint, bounds=bounds)
    slot.reported.set()  # its start is reported: the task's requests go straight through
    return slot


def test_a_run_may_hold_only_so_many_waits_open():
    slot = _slot(AgentBounds(max_open_waits=3), [])
    for i in range(3):
        req = rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id=f"w{i}", until_unix=4e9))
        assert slot.handle(req).WhichOneof("msg") == "wait_accepted"
    refused = slot.handle(rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id="w3", until_unix=4e9)))
    assert refused.limit.what == "waits" and refused.limit.limit == 3 and refused.limit.actual == 4
    assert "--max-open-waits" in refused.error and len(slot.waits) == 3
    # The same wait asked again (a restored task does that) is no new one.
    assert slot.handle(rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id="w1", until_unix=4e9))).WhichOneof("msg") \
        == "wait_accepted"


def test_checkpoints_asked_at_once_are_taken_by_one_thread_in_order():
    taken: list[str] = []
    gate = threading.Event()
    slot = _slot(AgentBounds(), taken, gate)
    for i in range(20):
        assert slot.handle(rt.RuntimeRequest(checkpoint=rt.RuntimeCheckpoint(wait_id=f"c{i}"))).wait_accepted
    workers = [t for t in threading.enumerate() if t.name == "checkpoint-r"]
    assert len(workers) == 1  # one worker, not one thread per request
    gate.set()
    assert_eventually(lambda: len(taken) == 20)
    assert [t.split(":")[1] for t in taken] == [f"c{i}" for i in range(20)]
    assert len({t.split(":")[0] for t in taken}) == 1


def test_frame_limits_by_kind_and_the_kind_from_the_first_byte():
    b = AgentBounds(max_metadata_bytes=1000, max_result_bytes=2000, max_trigger_bytes=3000)
    for kind in ("context", "wait", "metadata", "result", "trigger", "checkpoint", "create_token", "wait_result"):
        req = rt.RuntimeRequest(**{kind: getattr(rt, rt.RuntimeRequest.DESCRIPTOR.fields_by_name[kind]
                                                 .message_type.name)()})
        assert kind_of(req.SerializeToString()[0]) == kind
    assert kind_of(0xFF) is None and kind_of(0x08) is None  # a long key; a varint field
    assert (b.frame_limit("metadata"), b.frame_limit("trigger")) == (1000 + 1024, 3000)
    assert b.frame_limit("result") == 2000 + 256 * 1024  # room for a failure's error and traceback
    assert b.frame_limit(None) == b.frame_limit("context") == CONTROL_FRAME
    big = b.check(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json="x" * 1001)))
    assert big is not None and (big.limit.limit, big.limit.actual) == (1000, 1001)
    failed = rt.RuntimeRequest(result=rt.RuntimeResult(ok=False, error="x" * 5000))  # a failure's error is no output
    assert b.check(failed) is None


def test_bad_bounds_are_refused_with_the_setting_named():
    with pytest.raises(ConfigError, match="connections_per_run must be positive"):
        AgentBounds(connections_per_run=0)
    with pytest.raises(ConfigError, match="at least the connections per run"):
        AgentBounds(connections_per_run=10, connections_total=5)


def test_cli_defaults_are_the_bounds_defaults():
    """The CLI names its defaults itself (importing the agent would slow every command): they must agree."""
    from torpor.cli import cli
    from torpor.cli._sizes import BYTES
    from torpor.coordinator._config import CoordinatorConfig, Limits

    agent = {p.name: p for p in cli.commands["agent"].params}
    b = AgentBounds()
    pairs = {"max_metadata_bytes": b.max_metadata_bytes, "max_result_bytes": b.max_result_bytes,
             "max_trigger_bytes": b.max_trigger_bytes, "runtime_connections": b.connections_per_run,
             "runtime_connections_total": b.connections_total, "runtime_read_timeout": b.read_timeout,
             "max_open_waits": b.max_open_waits, "outbox_log_bytes": b.outbox_log_bytes}
    for name, want in pairs.items():
        p = agent[name]
        assert p.type_cast_value(click.Context(cli), p.default) == want, name
    coord = {p.name: p for p in cli.commands["coordinator"].params}
    assert BYTES.convert(coord["log_budget"].default, None, None) == CoordinatorConfig(db_url="").log_budget_bytes
    assert coord["max_children"].default == Limits().max_children


@pytest.mark.parametrize("text,n", [("65536", 65536), ("64KiB", 65536), ("64k", 65536), ("16 MiB", 16 << 20),
                                    ("1G", 1 << 30), ("2MB", 2 << 20)])
def test_sizes_on_the_command_line(text: str, n: int):
    from torpor.cli._sizes import BYTES

    assert BYTES.convert(text, None, None) == n


def test_a_bad_size_says_what_to_give():
    from torpor.cli._sizes import BYTES

    with pytest.raises(click.BadParameter, match="KiB, MiB, GiB or TiB"):
        BYTES.convert("lots", None, None)
    with pytest.raises(click.BadParameter, match="more than 0"):
        BYTES.convert("0", None, None)


def test_short_waits_share_one_alarm_thread_and_fire_in_due_order():
    from torpor.agent._alarms import Alarms

    alarms = Alarms()
    fired: list[int] = []
    before = {t.ident for t in threading.enumerate()}
    fns = {}
    with alarms._cond:  # (reentrant) nothing fires until all are set
        for i in range(200):
            fns[i] = lambda i=i: fired.append(i)
            alarms.after(0.3 - i * 0.001, fns[i])  # set latest first
        # Each due time is taken when its alarm is set: on a slow machine they need not be in reverse order.
        by_fn = {id(fn): i for i, fn in fns.items()}
        due_order = [by_fn[id(fn)] for _, _, fn in sorted(alarms._heap, key=lambda e: (e[0], e[1]))]
    started = [t for t in threading.enumerate() if t.ident not in before and t.name == "alarms"]
    assert started == [alarms._thread]  # one thread for 200 alarms
    assert_eventually(lambda: len(fired) == 200)
    assert fired == due_order  # the earliest due went first
    slot = _slot(AgentBounds(), [])
    slot.handle(rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id="short", until_unix=0.0)))  # due already
    assert_eventually(lambda: slot.waits.get("short") is not None)
