"""Placement: a run in network mode "host" goes only to an agent that allows it, and says why while it waits."""

from __future__ import annotations

import time

from coord_support import (  # noqa: F401  (fixtures)
    agents, client, coordinator, deploy, running, start_coordinator, status, suspend_on, task, wait_status,
)
from helpers import assert_eventually
from torpor.client import run_dict
from torpor._proto.v1 import agent_pb2


def _unplaced(client, run_id):
    return run_dict(client.get_run(run_id))["unplaced"] or ""


def test_a_host_network_run_waits_with_its_reason_until_an_agent_allows_it(client, agents):
    deploy(client, task("hostnet", network="host"), task("plain"))
    refusing = agents("refusing", slots=4, auto_start=False)
    run_id = client.trigger("hostnet").run_id
    assert_eventually(lambda: "--allow-host-network" in _unplaced(client, run_id), timeout=10)
    # The run waits where it is; the agent that refuses host networks keeps taking the other runs.
    plain = client.trigger("plain").run_id
    refusing.wait_command("start", plain)
    assert refusing.count("start", run_id) == 0 and status(client, run_id) == "QUEUED"
    run = client.get_run(run_id)
    assert [e.type for e in run.events].count("unplaced") == 1, "the reason is recorded once, not every round"

    allowing = agents("allowing", slots=1, allow_host_network=True, auto_start=False)
    start = allowing.wait_command("start", run_id)
    assert start.start.spec.settings.network == "host"
    assert refusing.count("start", run_id) == 0
    assert_eventually(lambda: _unplaced(client, run_id) == "", timeout=10)


def test_a_run_dumped_in_host_mode_restores_only_where_host_networks_are_allowed(client, agents):
    # The task names no mode; the agent it ran on defaults to "host" and recorded that in the checkpoint.
    deploy(client, task("sleeper"))
    first = agents("first", slots=1, allow_host_network=True)
    run_id = running(client, first, "sleeper")
    first.send(wait_requested=agent_pb2.WaitRequested(run=first.ref(run_id), wait_id="w1",
                                                      until_unix=time.time() + 0.5))
    first.wait_command("suspend", run_id)
    first.checkpoint(run_id, "ck-w1", network="host")
    first.exit(run_id, has_result=False, reason="suspended")
    assert_eventually(lambda: [c.network for c in client.get_run(run_id).checkpoints] == ["host"], timeout=10)
    first.close()

    refusing = agents("refusing", slots=2)
    assert_eventually(lambda: "network='host'" in _unplaced(client, run_id), timeout=15)
    assert refusing.count("restore", run_id) == 0
    allowing = agents("allowing", slots=1, allow_host_network=True)
    restore = allowing.wait_command("restore", run_id, timeout=10)
    assert restore.restore.checkpoint_id == "ck-w1"
    assert refusing.count("restore", run_id) == 0
    wait_status(client, run_id, "RESTORING", "RUNNING")


GiB = 1 << 30


def test_a_run_goes_only_where_its_memory_fits_and_says_why_it_waits(client, agents):
    deploy(client, task("big", memory_bytes=3 * GiB))
    small = agents("small", slots=4, memory=2 * GiB, auto_start=False)
    first = client.trigger("big").run_id
    assert_eventually(lambda: "the most any connected agent offers is 2 GiB" in _unplaced(client, first), timeout=10)
    assert small.count("start", first) == 0

    large = agents("large", slots=4, memory=4 * GiB, auto_start=False)
    large.wait_command("start", first)
    wait_status(client, first, "STARTING", "RUNNING")
    # 3 of the large agent's 4 GiB are promised to the first run: a second waits, though both agents have slots.
    second = client.trigger("big").run_id
    assert_eventually(lambda: "no agent with a free slot has that much left now" in _unplaced(client, second),
                      timeout=10)
    assert small.count("start", second) == 0 and large.count("start", second) == 0
    large.exit(first, output=1)
    large.wait_command("start", second)
    assert small.count("start", second) == 0
    assert_eventually(lambda: _unplaced(client, second) == "", timeout=10)


def test_runs_without_a_memory_limit_are_placed_as_before(client, agents):
    deploy(client, task("plain"))
    a = agents("tiny", slots=2, memory=64 << 20, auto_start=False)
    run_id = client.trigger("plain").run_id
    a.wait_command("start", run_id)


def test_an_oom_kill_ends_the_run_out_of_memory_without_a_retry(client, agents):
    deploy(client, task("hog", memory_bytes=GiB, retry={"max_attempts": 3}))
    a = agents("a", slots=1, memory=4 * GiB, auto_start=False)
    run_id = client.trigger("hog").run_id
    a.wait_command("start", run_id)
    wait_status(client, run_id, "STARTING", "RUNNING")
    a.exit(run_id, has_result=False, reason="oom", error="the task used more memory than its limit (1 GiB)")
    run = wait_status(client, run_id, "OUT_OF_MEMORY")
    assert run.attempt == 1 and "more memory than its limit" in run.error, run
    assert [e.type for e in run.events][-1] == "out_of_memory"
    # A SIGKILL the agent cannot explain is a host failure, as before: the run is started again.
    deploy(client, task("victim"))
    victim = client.trigger("victim").run_id
    a.wait_command("start", victim)
    wait_status(client, victim, "STARTING", "RUNNING")
    a.exit(victim, has_result=False, reason="killed")
    assert_eventually(lambda: a.count("start", victim) == 2, timeout=15, msg="the killed run was not started again")
