"""Issue 5 end to end: waits that hold no compute, through a real `torpor dev` stack."""

from __future__ import annotations

from pathlib import Path

from e2e_support import trigger, wait_status
from helpers import assert_eventually


def test_long_wait_suspends_frees_everything_and_resumes_with_state(stack):
    run_id = trigger(stack, "big-state", {"mb": 100, "seconds": 30})
    run = wait_status(stack, run_id, {"SUSPENDED"}, timeout=90)
    # During the wait: a snapshot in the store, no container anywhere, the slot free.
    suspend = [c for c in run["checkpoints"] if c["kind"] == "SUSPEND"]
    assert suspend, run
    manifest = Path(stack.dir / "store" / suspend[-1]["location"])
    assert manifest.exists(), manifest
    assert suspend[-1]["size_bytes"] > 50 << 20  # 100 MB of random bytes does not compress
    for agent in stack.agents:
        assert not [c for c in stack.runc_list(agent) if c["id"].startswith(run_id)]
    agents = stack.cli_json("agents", "list")
    assert all(a["slots_used"] == 0 for a in agents), agents
    shown = stack.cli("runs", "show", run_id).stdout
    assert "SUSPENDED" in shown

    done = wait_status(stack, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED", done
    assert done["output"]["before"] == done["output"]["after"]
    assert done["output"]["attempt"] == 1  # a restore is not a retry
    types = [e["type"] for e in done["events"]]
    assert any("suspend" in t for t in types) and any("restor" in t for t in types), types
    # Nothing of it is left on the agent's disk: no log files, no CRIU scratch of the dump or the restore.
    state = stack.agent_state(stack.agents[0])
    assert_eventually(lambda: not (state / "logs" / run_id).exists()
                      and not [p for p in (state / "images").iterdir() if p.name.startswith(run_id)], timeout=10)
    assert not [p for p in (state / "criu").iterdir() if p.name.startswith(run_id)]


def test_short_wait_is_served_in_place(stack):
    run_id = trigger(stack, "short-wait", {"seconds": 1})
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=60)
    assert done["status"] == "COMPLETED", done
    assert 1.0 <= done["output"]["slept"] < 3.0
    assert not [c for c in done["checkpoints"] if c["kind"] == "SUSPEND"]
    logs = stack.cli("runs", "logs", run_id)  # the task's stdout on stdout, its stderr on stderr
    assert "short-wait says hello" in logs.stdout, logs
    assert "INFO and logs through torpor.logger" in logs.stderr, logs


def test_token_completed_through_cli_resumes_with_its_data(stack):
    run_id = trigger(stack, "token-wait", {})
    run = assert_eventually(lambda: (r := stack.cli_json("runs", "show", run_id)).get("metadata") and r, timeout=60)
    token = run["metadata"]["token"]
    wait_status(stack, run_id, {"SUSPENDED"}, timeout=60)
    stack.cli("tokens", "complete", token, "--data", '{"approved": true}')
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert done["output"] == {"data": {"approved": True}}, done
    # A token completed twice: the second completion changes nothing.
    again = stack.cli("tokens", "complete", token, "--data", '{"approved": false}', check=False)
    assert stack.cli_json("runs", "show", run_id)["output"] == {"data": {"approved": True}}
    assert again.returncode in (0, 1)


def test_token_completed_before_the_dump_finishes(stack):
    """The race users report most: completion lands while the parent is still being dumped."""
    run_id = trigger(stack, "token-wait", {})
    run = assert_eventually(lambda: (r := stack.cli_json("runs", "show", run_id)).get("metadata") and r, timeout=60)
    stack.cli("tokens", "complete", run["metadata"]["token"], "--data", '"early"')
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert done["output"] == {"data": "early"}, done


def test_token_timeout_raises_wait_timeout(stack):
    run_id = trigger(stack, "token-wait", {"timeout": 4})
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert done["output"] == {"timed_out": True}, done


def test_trigger_and_wait_and_batch_with_a_failed_child(stack):
    run_id = trigger(stack, "parent", {})
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=180)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    assert out["one"] == 10
    assert out["many"][0] == 20 and out["many"][2] == 40
    assert out["many"][1].startswith("error:") and "fails on purpose" in out["many"][1]


def test_retries_then_success_lists_attempts(stack):
    run_id = trigger(stack, "flaky", {})
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert done["status"] == "COMPLETED" and done["output"] == {"attempt": 3}, done
    attempts = done["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert "attempt 1 fails on purpose" in (attempts[0]["error"] or "")
    assert "attempt 2 fails on purpose" in (attempts[1]["error"] or "")
    shown = stack.cli("runs", "show", run_id).stdout
    assert "attempt 1 fails on purpose" in shown


def test_explicit_checkpoints_keep_the_run_going(stack):
    run_id = trigger(stack, "save-points", {})
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert done["status"] == "COMPLETED" and done["output"] == {"counter": 3}, done
    assert len([c for c in done["checkpoints"] if c["kind"] == "ON_DEMAND"]) == 3


def test_cancel_while_suspended_releases_the_snapshot(stack):
    run_id = trigger(stack, "big-state", {"mb": 1, "seconds": 120})
    run = wait_status(stack, run_id, {"SUSPENDED"}, timeout=60)
    location = Path(stack.dir / "store" / run["checkpoints"][-1]["location"])
    assert location.exists()
    stack.cli("runs", "cancel", run_id)
    wait_status(stack, run_id, {"CANCELED"}, timeout=30)
    assert_eventually(lambda: not location.exists(), timeout=30, msg="snapshot of a canceled run not released")


def test_on_demand_checkpoint_from_the_cli_keeps_the_run_going(stack):
    run_id = trigger(stack, "busy", {"seconds": 6})
    wait_status(stack, run_id, {"RUNNING"}, timeout=60)
    out = stack.cli_json("runs", "checkpoint", run_id)
    assert out["kind"] == "ON_DEMAND" and out["size_bytes"] > 0, out
    assert (stack.dir / "store" / out["location"]).exists()
    assert stack.cli_json("runs", "show", run_id)["status"] == "RUNNING"
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=60)
    assert done["status"] == "COMPLETED" and done["output"] == "done"
    assert [c["kind"] for c in done["checkpoints"]] == ["ON_DEMAND"]
