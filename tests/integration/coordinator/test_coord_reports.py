"""Numbered reports take effect exactly once, through real gRPC and Postgres.

The agent sends a report again when it cannot know it arrived (the stream
broke before the acknowledgement): the coordinator acknowledges it again and
applies nothing twice. A new agent process (a new incarnation) counts from 1.
"""

from __future__ import annotations

from coord_support import API_KEY, FakeAgent, agents, client, coordinator, deploy, running, start_coordinator, task  # noqa: F401
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2


def _log(agent: FakeAgent, run_id: str, text: bytes, seq: int) -> None:
    agent.send(log=agent_pb2.LogData(run=agent.ref(run_id), stream="stdout", data=text, attempt=1), seq=seq)


def _acks(agent: FakeAgent) -> list[int]:
    return [m.ack.seq for m in agent.commands if m.WhichOneof("msg") == "ack"]


def test_a_report_sent_again_is_acknowledged_again_and_applied_once(client, agents):
    deploy(client, task("chatty"))
    agent = agents("numbered", incarnation="proc-1")
    run_id = running(client, agent, "chatty")
    _log(agent, run_id, b"one\n", 1)
    _log(agent, run_id, b"two\n", 2)
    assert_eventually(lambda: _acks(agent) == [1, 2], 5)
    agent.close()

    # The same process, reconnected: it sends 2 again (its ack may have been lost), then 3.
    again = agents("numbered", incarnation="proc-1", holding=[(run_id, 1)])
    _log(again, run_id, b"two\n", 2)
    _log(again, run_id, b"three\n", 3)
    assert_eventually(lambda: _acks(again) == [2, 3], 5)
    logs = b"".join(c.data for c in client.stream_logs(run_id))
    assert logs == b"one\ntwo\nthree\n"

    # A final report sent twice: the run completes once, with the first output.
    again.send(run_exited=agent_pb2.RunExited(run=again.ref(run_id), has_result=True, output_json='"first"'), seq=4)
    again.send(run_exited=agent_pb2.RunExited(run=again.ref(run_id), has_result=True, output_json='"second"'), seq=4)
    assert_eventually(lambda: _acks(again) == [2, 3, 4, 4], 5)
    run = client.get_run(run_id)
    assert run.output_json == '"first"' and [e.type for e in run.events].count("completed") == 1


def test_a_new_agent_process_counts_from_one_again(client, agents):
    deploy(client, task("reborn"))
    first = agents("reborn-host", incarnation="proc-1")
    run_id = running(client, first, "reborn")
    _log(first, run_id, b"a\n", 1)
    assert_eventually(lambda: _acks(first) == [1], 5)
    first.close()
    second = agents("reborn-host", incarnation="proc-2", holding=[(run_id, 1)])
    _log(second, run_id, b"b\n", 1)
    assert_eventually(lambda: _acks(second) == [1], 5)
    assert b"".join(c.data for c in client.stream_logs(run_id)) == b"a\nb\n"


def test_a_refused_report_is_acknowledged_and_not_sent_for_ever(client, agents):
    deploy(client, task("refused"))
    agent = agents("refuser", incarnation="p")
    run_id = running(client, agent, "refused")
    # Invalid JSON metadata is refused for good: acknowledged, nothing changed, later reports still apply.
    agent.send(metadata=agent_pb2.MetadataUpdate(run=agent.ref(run_id), metadata_json="{"), seq=1)
    _log(agent, run_id, b"after\n", 2)
    assert_eventually(lambda: _acks(agent) == [1, 2], 5)
    assert client.get_run(run_id).metadata_json in ("", "{}", "null")
    assert b"".join(c.data for c in client.stream_logs(run_id)) == b"after\n"
