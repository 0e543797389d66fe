"""Commands reach their agent at least once, across a broken stream, and are taken once.

Before the fix, outbox rows were deleted as they were put on the stream: a
WaitResolved in flight when the stream broke was gone, and the run, woken by
nobody, waited for ever.
"""

from __future__ import annotations

import time

import psycopg

from coord_support import agents, client, coordinator, deploy, running, start_coordinator, task  # noqa: F401
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2


def _resolved(agent) -> list[int]:  # type: ignore[no-untyped-def]
    return [m.cmd_id for m in agent.commands if m.WhichOneof("msg") == "wait_resolved"]


def _outbox_rows(coordinator, agent: str) -> int:  # type: ignore[no-untyped-def]
    with psycopg.connect(coordinator.config.db_url) as conn:
        return conn.execute("SELECT count(*) FROM agent_commands WHERE agent = %s", (agent,)).fetchone()[0]


def test_a_command_lost_with_its_stream_comes_again_on_the_next(coordinator, client, agents):
    deploy(client, task("sleeper"))
    agent = agents("flaky-link", ack_commands=False)  # takes commands but its acknowledgements never arrive
    run_id = running(client, agent, "sleeper")
    agent.send(wait_requested=agent_pb2.WaitRequested(run=agent.ref(run_id), wait_id="w1",
                                                      until_unix=time.time() + 3600))
    agent.wait_command("suspend", run_id)
    client.wake_run(run_id)  # resolves the wait while the run is SUSPENDING: WaitResolved goes to the agent
    assert_eventually(lambda: len(_resolved(agent)) == 1, 5)
    first = _resolved(agent)[0]
    assert first > 0 and _outbox_rows(coordinator, "flaky-link") == 2  # SuspendRun and WaitResolved, kept
    agent.close()  # the stream breaks before any acknowledgement

    again = agents("flaky-link", holding=[(run_id, 1)])
    assert_eventually(lambda: _resolved(again) == [first], 5)  # the same command, the same id
    # Acknowledged this time: it leaves the outbox, and a later stream does not get it.
    assert_eventually(lambda: _outbox_rows(coordinator, "flaky-link") == 0, 5)
    again.close()
    third = agents("flaky-link", holding=[(run_id, 1)])
    time.sleep(1.0)
    assert _resolved(third) == []
