"""A task cannot make the root agent use unbounded memory, threads or storage (issue 10, "Bounds").

Through a real `torpor dev` stack (Postgres, coordinator, an agent process,
runc, CRIU) with small limits set the way an operator sets them (the
TORPOR_* variables of `torpor agent` and `torpor coordinator`). The agent's
RSS and threads are sampled with psutil on its own pid; heartbeats being on
time is asserted by its outcome: the agent is never lost, no run has a host
failure, and the agent never froze its containers for want of a renewal.
"""

from __future__ import annotations

import json
from typing import Iterator

import psutil
import pytest

from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import ResourceWatch, assert_eventually

MiB = 1 << 20
DONE = {"COMPLETED", "FAILED", "CRASHED", "CANCELED", "TIMED_OUT"}
LIMITS = {
    "TORPOR_LOG_BUDGET": "4MiB",
    "TORPOR_MAX_CHILDREN": "3",
    "TORPOR_RUNTIME_CONNECTIONS": "4",
    "TORPOR_RUNTIME_CONNECTIONS_TOTAL": "8",
    "TORPOR_RUNTIME_READ_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def bounded() -> Iterator[Stack]:
    yield from make_stack(1, "--slots", "3", "--suspend-threshold", "3", env=LIMITS)


def _agent(stack: Stack) -> psutil.Process:
    assert stack.proc is not None
    for p in psutil.Process(stack.proc.pid).children(recursive=True):
        cmd = p.cmdline()
        if "agent" in cmd and "dev-agent-1" in cmd:
            return p
    raise AssertionError("no agent process under torpor dev")


def _healthy(stack: Stack, *run_ids: str) -> None:
    """The agent kept its lease all along: alive, no run lost a host, its containers never froze."""
    assert [a.alive for a in stack.client().list_agents()] == [True]
    for run_id in run_ids:
        events = stack.cli_json("runs", "show", run_id)["events"]
        assert not [e for e in events if e["type"] in ("host_lost", "host_failure")], events
    agent_log = (stack.dir / "logs" / "dev-agent-1.log").read_text(errors="replace")
    assert "no lease renewal confirmed" not in agent_log


def test_a_socket_flood_is_refused_while_another_run_and_the_heartbeats_go_on(bounded):
    agent = _agent(bounded)
    watch = ResourceWatch(agent.pid)
    try:
        flood = trigger(bounded, "flood-socket", {})
        assert_eventually(lambda: '"round": 1' in bounded.cli("runs", "logs", flood).stdout, timeout=120,
                          interval=0.5, msg="the flood never began")
        calm = trigger(bounded, "calm", {"n": 10})
        done = wait_status(bounded, calm, DONE, timeout=120)
        # The flood never stops by itself: every request of the calm run met it.
        assert bounded.cli_json("runs", "show", flood)["status"] == "RUNNING"
        bounded.cli("runs", "cancel", flood)
        wait_status(bounded, flood, {"CANCELED"}, timeout=60)
    finally:
        watch.stop()
    assert done["status"] == "COMPLETED" and done["output"] == "calm" and done["metadata"] == {"i": 9}, done
    rounds = [json.loads(line) for line in bounded.cli("runs", "logs", flood).stdout.splitlines()
              if line.startswith('{"round"')]
    assert rounds and all(r["refused"] == r["frames"] == 64 for r in rounds), rounds
    _healthy(bounded, flood, calm)
    # 64 frames announcing 4 GiB each per round, 200 stalled connections: a few threads, no frame in memory.
    assert watch.max_threads <= watch.threads_before + 4 + 24, (watch.threads_before, watch.max_threads)
    assert watch.rss_growth < 64 * MiB, (watch.rss_before, watch.max_rss)


def test_a_gigabyte_of_logs_stays_in_the_budget_and_the_marker_says_how_much_was_dropped(bounded):
    agent = _agent(bounded)
    watch = ResourceWatch(agent.pid)
    try:
        run = trigger(bounded, "print-gigabyte", {"mib": 1024})
        done = wait_status(bounded, run, DONE, timeout=300)
    finally:
        watch.stop()
    assert done["status"] == "COMPLETED", done
    attempt = done["attempts"][0]
    assert 4 * MiB - 1024 <= attempt["log_bytes"] <= 4 * MiB + 1024, attempt  # the budget, and two short lines
    assert 1024 * MiB - 4 * MiB <= attempt["log_dropped_bytes"] <= 1024 * MiB, attempt
    logs = bounded.cli("runs", "logs", run).stdout
    dropped = f"{attempt['log_dropped_bytes']:,} bytes of output dropped: over this attempt's log budget of " \
              f"4,194,304 bytes (torpor coordinator --log-budget)"
    assert dropped in logs and "reached its log budget" in logs
    assert len(logs.encode()) <= 4 * MiB + 1024
    shown = bounded.cli("runs", "show", run).stdout
    assert f"logs     attempt 1: {attempt['log_bytes']:,} bytes kept, {attempt['log_dropped_bytes']:,} dropped" in shown
    assert [e for e in done["events"] if e["type"] == "logs_dropped"]
    _healthy(bounded, run)
    assert watch.rss_growth < 64 * MiB, (watch.rss_before, watch.max_rss)


def test_too_big_metadata_too_big_a_trigger_and_too_many_children_raise_in_the_task(bounded):
    run = trigger(bounded, "over-limits", {"children": 3})
    done = wait_status(bounded, run, DONE, timeout=120)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    meta = out["metadata"]
    assert (meta["what"], meta["limit"]) == ("metadata", 64 * 1024) and meta["actual"] > 100 * 1024, meta
    assert meta["setting"] == "torpor agent --max-metadata-bytes" and "65,536 bytes" in meta["message"]
    # Nothing stored before was lost: in the task and in the run.
    assert out["metadata_after"] == {"small": "kept"} and done["metadata"] == {"small": "kept"}
    trig = out["trigger"]
    assert (trig["what"], trig["limit"]) == ("trigger", 8 * MiB) and trig["actual"] > 8 * MiB, trig
    kids = out["children"]
    assert out["triggered"] == 3 and (kids["what"], kids["limit"], kids["actual"]) == ("children", 3, 4), out
    assert "--max-children" in kids["message"] and "Nothing was triggered" in kids["message"]
    children = [r for r in bounded.client().list_runs(task="child").runs if r.parent_run_id == run]
    assert len(children) == 3


def test_an_output_over_the_limit_fails_the_attempt_naming_the_limit(bounded):
    run = trigger(bounded, "big-result", {"mib": 5})
    done = wait_status(bounded, run, DONE, timeout=120)
    assert done["status"] == "FAILED", done
    assert "--max-result-bytes" in done["error"] and "4,194,304 bytes" in done["error"], done["error"]
    _healthy(bounded, run)
