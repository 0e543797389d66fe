"""Outages delay work but kill nothing (guarantee 4): leases get a full period after a coordinator starts.

The coordinator is down for more than twice the lease while an agent holds a
RUNNING run; its heartbeats reach nobody. A new coordinator starts on the
same database and the agent reconnects half a lease later, as a real agent
does after its reconnect backoff. Before the fix, the new coordinator's first
tick (50 ms after it started) found the lease lapsed: the agent was declared
lost, its run restored elsewhere and a host failure spent.
"""

from __future__ import annotations

import time

import psutil

from coord_support import API_KEY, FakeAgent, deploy, make_config, running, task, wait_status
from helpers import assert_eventually
from torpor.client import Client
from fixtures.postgres import private_cluster
from torpor.coordinator import Coordinator


def test_agents_get_a_full_lease_to_reconnect_after_a_coordinator_outage(postgres_url):
    first = Coordinator(make_config(postgres_url, lease_seconds=1.0, heartbeat_seconds=0.2)).start()
    agent = FakeAgent(f"127.0.0.1:{first.port}", "steady-host").connect()
    try:
        with Client(f"127.0.0.1:{first.port}", api_key=API_KEY) as c:
            deploy(c, task("long"))
            run_id = running(c, agent, "long")
            generation = c.get_run(run_id).generation
    finally:
        agent.close()
        first.stop(grace=0)
    time.sleep(2.5)  # no coordinator for two and a half leases

    second = Coordinator(make_config(postgres_url, lease_seconds=1.0, heartbeat_seconds=0.2)).start()
    back = None
    try:
        time.sleep(0.5)  # its timers tick ten times before the agent is back
        back = FakeAgent(f"127.0.0.1:{second.port}", "steady-host", holding=[(run_id, generation)]).connect()
        with Client(f"127.0.0.1:{second.port}", api_key=API_KEY) as c:
            assert_eventually(lambda: [a.alive for a in c.list_agents()] == [True], 5)
            time.sleep(2.0)  # two more leases of normal heartbeats
            run = c.get_run(run_id)
            assert [e.detail for e in run.events if e.type == "host_lost"] == [], list(run.events)
            assert run.status == wait_status(c, run_id, "RUNNING").status and run.generation == generation
            assert not any(m.WhichOneof("msg") in ("kill", "restore") for m in back.commands), back.commands
            back.exit(run_id, output="done")
            assert wait_status(c, run_id, "COMPLETED").output_json == '"done"'
            # A host that really goes quiet is still found lost, a lease later.
            run2 = running(c, back, "long")
            back.heartbeat = False
            assert_eventually(lambda: any(e.type == "host_lost" for e in c.get_run(run2).events), 10)
    finally:
        if back is not None:
            back.close()
        second.stop(grace=0)


def _cluster_processes(postmaster: int) -> list[psutil.Process]:
    root = psutil.Process(postmaster)
    return [root, *root.children(recursive=True)]


def test_a_frozen_database_makes_no_host_lost(tmp_path):
    """Postgres stopped (SIGSTOP, every process of its cluster) for 2.5 leases while an agent heartbeats.

    Nothing can be recorded meanwhile, and the agent's heartbeats are lost
    (it is back half a lease after the database). The timer waits on the
    frozen database too; when it thaws, the first tick that gets an answer
    sees the gap and extends every lease instead of expiring them. Without
    that, the agent was found lost at that first tick and its run moved.
    """
    with private_cluster() as pg:
        url = pg.url()
        first = Coordinator(make_config(url, lease_seconds=1.0, heartbeat_seconds=0.2, migrate=True)).start()
        agent = FakeAgent(f"127.0.0.1:{first.port}", "frozen-db-host").connect()
        try:
            with Client(f"127.0.0.1:{first.port}", api_key=API_KEY) as c:
                deploy(c, task("long"))
                run_id = running(c, agent, "long")
                generation = c.get_run(run_id).generation
                procs = _cluster_processes(pg.pid)
                agent.heartbeat = False  # what it sends now is lost (a real agent's stream breaks and reconnects)
                for p in procs:
                    p.suspend()
                try:
                    time.sleep(2.5)  # the outage: two and a half leases
                finally:
                    for p in procs:
                        p.resume()
                time.sleep(0.5)  # the agent is back half a lease after the database: ten ticks later
                agent.heartbeat = True
                time.sleep(2.0)  # two more leases of normal heartbeats
                run = c.get_run(run_id)
                assert [e.detail for e in run.events if e.type == "host_lost"] == [], list(run.events)
                assert wait_status(c, run_id, "RUNNING").generation == generation
                assert [a.alive for a in c.list_agents()] == [True]
                assert not any(m.WhichOneof("msg") in ("kill", "restore") for m in agent.commands), agent.commands
                agent.exit(run_id, output="done")
                assert wait_status(c, run_id, "COMPLETED").output_json == '"done"'
        finally:
            agent.close()
            first.stop(grace=0)
