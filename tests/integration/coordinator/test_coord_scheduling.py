"""Scheduling: concurrency limits and keys, FIFO, delay, and two coordinators sharing one database."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from helpers import assert_eventually
from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, FakeAgent, Tracker, agents, client, coordinator, deploy, start_coordinator, status, task, wait_status,
)
from torpor.client import Client
from torpor._proto.v1 import common_pb2


class ActiveSampler:
    """Polls the database for the most runs of one (queue, concurrency_key) on agents at once."""

    SQL = ("SELECT queue, concurrency_key, count(*) AS n FROM runs WHERE agent IS NOT NULL"
           " AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING') GROUP BY 1, 2")

    def __init__(self, url: str) -> None:
        self.peak: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._conn = psycopg.connect(url, autocommit=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for q, k, n in self._conn.execute(self.SQL).fetchall():
                self.peak[(q, k)] = max(self.peak.get((q, k), 0), n)
            time.sleep(0.005)

    def stop(self) -> dict[tuple[str, str], int]:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def _all_done(client, run_ids):
    def check():
        done = sum(1 for r in run_ids if common_pb2.RunStatus.Name(client.get_run(r).status) == "COMPLETED")
        assert done == len(run_ids), f"{done}/{len(run_ids)} completed"
        return True
    return check


def test_concurrency_limit_never_exceeded_under_200_concurrent_triggers(client, agents, postgres_url):
    deploy(client, task("limited", concurrency_limit=3))
    tracker = Tracker()
    for i in range(3):
        agents(f"a{i}", slots=8, auto_exit=0.01, tracker=tracker)
    sampler = ActiveSampler(postgres_url)
    with ThreadPoolExecutor(16) as pool:
        run_ids = list(pool.map(lambda i: client.trigger("limited", i).run_id, range(200)))
    assert len(set(run_ids)) == 200
    assert_eventually(_all_done(client, run_ids), 60)
    peak = sampler.stop()
    assert tracker.peak["limited"] <= 3 and peak[("limited", "")] <= 3
    assert tracker.peak["limited"] == 3  # the limit was reached, not merely respected by running one at a time
    assert set(tracker.starts.values()) == {1}


def test_concurrency_keys_are_separate_sub_queues(client, agents, postgres_url):
    deploy(client, task("per-user", concurrency_limit=1))
    tracker = Tracker()
    agents("a", slots=10, auto_exit=0.03, tracker=tracker)
    sampler = ActiveSampler(postgres_url)
    run_ids = [client.trigger("per-user", i, concurrency_key=f"user-{i % 3}").run_id for i in range(30)]
    assert_eventually(_all_done(client, run_ids), 30)
    peak = sampler.stop()
    assert {k: v for k, v in peak.items()} == {("per-user", f"user-{i}"): 1 for i in range(3)}
    assert tracker.peak["per-user"] >= 2  # different keys did run side by side


def test_fifo_within_a_queue(client, agents):
    deploy(client, task("fifo"))
    run_ids = [client.trigger("fifo", i).run_id for i in range(8)]
    agent = agents("a", slots=1, auto_exit=0.0)
    assert_eventually(_all_done(client, run_ids), 20)
    order = [m.start.spec.run.run_id for m in agent.commands if m.WhichOneof("msg") == "start"]
    assert order == run_ids


def test_delay_holds_the_run_back(client, agents):
    deploy(client, task("later"))
    agent = agents("a")
    t0 = time.monotonic()
    run_id = client.trigger("later", delay=0.6).run_id
    agent.wait_command("start", run_id, timeout=5)
    assert time.monotonic() - t0 >= 0.6


def test_no_free_slot_no_start(client, agents):
    deploy(client, task("full"))
    agent = agents("a", slots=1)
    first = client.trigger("full").run_id
    second = client.trigger("full").run_id
    agent.wait_command("start", first)
    wait_status(client, first, "RUNNING")
    time.sleep(0.3)  # give the scheduler every chance to misplace it (checked below, not timed)
    assert status(client, second) == "QUEUED"
    agent.exit(first, output=1)
    agent.wait_command("start", second)


def test_two_coordinators_never_start_one_run_twice(start_coordinator, postgres_url):
    c1, c2 = start_coordinator(), start_coordinator()
    tracker = Tracker()
    made = [FakeAgent(f"127.0.0.1:{c.port}", f"{c.id[-6:]}-{i}", slots=6, auto_exit=0.005, tracker=tracker).connect()
            for c in (c1, c2) for i in range(2)]
    clients = [Client(f"127.0.0.1:{c.port}", api_key=API_KEY) for c in (c1, c2)]
    try:
        deploy(clients[0], task("dup"), task("dup-limited", concurrency_limit=2))
        sampler = ActiveSampler(postgres_url)
        with ThreadPoolExecutor(16) as pool:
            run_ids = list(pool.map(
                lambda i: clients[i % 2].trigger("dup" if i % 3 else "dup-limited", i).run_id, range(300)))
        assert_eventually(_all_done(clients[1], run_ids), 60)
        peak = sampler.stop()
        twice = [r for r, n in tracker.starts.items() if n != 1]
        with psycopg.connect(postgres_url) as conn:
            why = conn.execute("SELECT run_id, type, detail, agent FROM run_events WHERE run_id = ANY(%s)"
                               " AND type NOT IN ('triggered', 'started', 'completed') ORDER BY id", (twice,)).fetchall()
        assert len(tracker.starts) == 300 and not twice, why
        assert tracker.peak["dup-limited"] <= 2 and peak[("dup-limited", "")] <= 2
        # both coordinators did start runs
        per_agent = [sum(1 for m in a.commands if m.WhichOneof("msg") == "start") for a in made]
        assert per_agent[0] + per_agent[1] > 0 and per_agent[2] + per_agent[3] > 0
    finally:
        for a in made:
            a.close()
        for c in clients:
            c.close()
