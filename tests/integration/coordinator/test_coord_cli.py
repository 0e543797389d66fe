"""The CLI verbs over a real coordinator."""

from __future__ import annotations

import json

from click.testing import CliRunner

from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, agents, client, coordinator, deploy, running, suspend_on, start_coordinator, task, wait_status,
)
from torpor._proto.v1 import agent_pb2
from torpor.cli import cli
from torpor.coordinator import latest_version


def _run(coordinator, *args, ok=True):
    env = {"TORPOR_ADDRESS": f"127.0.0.1:{coordinator.port}", "TORPOR_API_KEY": API_KEY}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_trigger_show_list_cancel_replay(coordinator, client, agents, tmp_path):
    deploy(client, task("hello"))
    payload = tmp_path / "p.json"
    payload.write_text('{"name": "ada"}')
    out = json.loads(_run(coordinator, "trigger", "hello", "--payload", f"@{payload}", "--tag", "a", "--tag", "b",
                          "--idempotency-key", "k1", "--json").output)
    run_id = out["id"]
    assert out["status"] == "QUEUED" and out["payload"] == {"name": "ada"} and out["tags"] == ["a", "b"]
    assert not out["existing"]
    again = json.loads(_run(coordinator, "trigger", "hello", "--idempotency-key", "k1", "--json").output)
    assert again["id"] == run_id and again["existing"]
    agent = agents("cli-agent")
    agent.wait_command("start", run_id)
    wait_status(client, run_id, "RUNNING")
    agent.checkpoint(run_id, "ck-1", kind=2)
    agent.send(log=agent_pb2.LogData(run=agent.ref(run_id), stream="stdout", data=b"hi there\n", attempt=1))
    agent.exit(run_id, output={"greeting": "hello ada"})
    wait_status(client, run_id, "COMPLETED")
    shown = json.loads(_run(coordinator, "runs", "show", run_id, "--json").output)
    for key in ("id", "task", "version", "status", "attempt", "payload", "output", "error", "tags", "created_at",
                "started_at", "finished_at", "agent", "checkpoints", "events"):
        assert key in shown, key
    assert shown["output"] == {"greeting": "hello ada"} and shown["agent"] == "cli-agent"
    assert shown["checkpoints"][0] | {"id": "ck-1", "kind": "PERIODIC", "size_bytes": 1234, "duration_ms": 42,
                                      "agent": "cli-agent"} == shown["checkpoints"][0]
    assert [e["type"] for e in shown["events"]][:3] == ["queued", "starting", "started"]
    assert all({"time", "type", "detail"} <= set(e) for e in shown["events"])
    human = _run(coordinator, "runs", "show", run_id).output
    assert "COMPLETED" in human and "Timeline" in human and "started" in human and "ck-1" in human
    assert _run(coordinator, "runs", "logs", run_id).output == "hi there\n"
    listed = json.loads(_run(coordinator, "runs", "list", "--status", "COMPLETED", "--json").output)
    assert [r["id"] for r in listed["runs"]] == [run_id]
    replay = json.loads(_run(coordinator, "runs", "replay", run_id, "--json").output)
    assert replay["id"] != run_id and replay["payload"] == {"name": "ada"}
    canceled = json.loads(_run(coordinator, "runs", "cancel", replay["id"], "--json").output)
    assert canceled["status"] == "CANCELED"
    refused = _run(coordinator, "runs", "cancel", replay["id"], ok=False)
    assert refused.exit_code == 1 and "FAILED_PRECONDITION" in refused.output


def test_trigger_wait_tokens_agents(coordinator, client, agents):
    deploy(client, task("tw"))
    agent = agents("a9", auto_exit=0.05)
    result = _run(coordinator, "trigger", "tw", "--payload", "[1, 2]", "--wait", "--json")
    assert json.loads(result.output)["status"] == "COMPLETED"
    listed = json.loads(_run(coordinator, "agents", "list", "--json").output)
    assert listed[0]["name"] == "a9" and listed[0]["alive"] and listed[0]["slots"] == 4
    agent.auto_exit = None
    run_id = running(client, agent, "tw")
    agent.send(token_registered=agent_pb2.TokenRegistered(run=agent.ref(run_id), token_id="tok-cli"))
    agent.send(wait_requested=agent_pb2.WaitRequested(run=agent.ref(run_id), wait_id="w",
                                                      token=agent_pb2.TokenWait(token_id="tok-cli")))
    agent.wait_command("suspend", run_id)
    out = json.loads(_run(coordinator, "tokens", "complete", "tok-cli", "--data", '{"ok": 1}', "--json").output)
    assert out == {"token": "tok-cli", "completed": True, "run_id": run_id}
    bad = _run(coordinator, "trigger", "tw", "--payload", "{", ok=False)
    assert bad.exit_code == 1 and "INVALID_ARGUMENT: payload is not valid JSON" in bad.output
    unauth = CliRunner().invoke(cli, ["agents", "list", "--address", f"127.0.0.1:{coordinator.port}", "--api-key", "x"])
    assert unauth.exit_code == 1 and "UNAUTHENTICATED" in unauth.output


def test_migrate_and_keys(empty_postgres_url):
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--db", empty_postgres_url])
    assert first.exit_code == 0 and f"schema at version {latest_version()} (was 0)" in first.output
    assert "up to date" in runner.invoke(cli, ["migrate", "--db", empty_postgres_url]).output
    created = runner.invoke(cli, ["keys", "create", "--db", empty_postgres_url, "--kind", "agent", "--json"])
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert key["kind"] == "agent" and key["secret"].startswith("tpj_")
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--db", empty_postgres_url, "--json"]).output)
    assert [k["id"] for k in listed] == [key["id"]] and "secret" not in listed[0]
    assert runner.invoke(cli, ["keys", "revoke", "--db", empty_postgres_url, key["id"]]).exit_code == 0


def test_runs_wait_wake_and_tokens_complete_for_a_run(coordinator, client, agents):
    import time

    deploy(client, task("napper"))
    agent = agents("cli-waker")
    run_id = running(client, agent, "napper")
    waited = _run(coordinator, "runs", "wait", run_id, "--for", "suspended", "--timeout", "0.5", ok=False)
    assert waited.exit_code == 2 and "was not suspended within 0.5 s (it is RUNNING)" in waited.output
    suspend_on(agent, run_id, "w1", until_unix=time.time() + 7200)
    line = _run(coordinator, "runs", "wait", run_id, "--for", "suspended").output
    assert line.startswith(f"{run_id}  SUSPENDED  waiting until ") and f"torpor runs wake {run_id}" in line
    shown = json.loads(_run(coordinator, "runs", "show", run_id, "--json").output)
    assert shown["waiting"]["kind"] == "time" and shown["waiting"]["wait_id"] == "w1"
    assert "waiting  until" in _run(coordinator, "runs", "show", run_id).output
    no_token = _run(coordinator, "tokens", "complete", "--run", run_id, ok=False)
    assert no_token.exit_code == 1 and "not on a token" in no_token.output
    assert _run(coordinator, "runs", "wake", run_id).output.strip() == f"{run_id}  RESTORING"
    agent.wait_command("restore", run_id)
    wait_status(client, run_id, "RUNNING")
    refused = _run(coordinator, "runs", "wake", run_id, ok=False)
    assert refused.exit_code == 1 and "FAILED_PRECONDITION" in refused.output and "not waiting" in refused.output
    assert "Traceback" not in refused.output

    agent.send(token_registered=agent_pb2.TokenRegistered(run=agent.ref(run_id), token_id="tok-for-run"))
    suspend_on(agent, run_id, "w2", token=agent_pb2.TokenWait(token_id="tok-for-run"))
    assert "waiting on token tok-for-run" in _run(coordinator, "runs", "wait", run_id, "--for", "waiting").output
    token_wake = _run(coordinator, "runs", "wake", run_id, ok=False)
    assert "torpor tokens complete tok-for-run" in token_wake.output
    before = len(agent.commands)
    out = json.loads(_run(coordinator, "tokens", "complete", "--run", run_id, "--data", "true", "--json").output)
    assert out == {"token": "tok-for-run", "completed": True, "run_id": run_id}
    restore = agent.wait_command("restore", run_id, after=before)
    assert restore.restore.wake.result_json == "true"
    wait_status(client, run_id, "RUNNING")
    agent.exit(run_id, output={"done": 1})
    final = _run(coordinator, "runs", "wait", run_id).output
    assert final.strip() == f'{run_id}  COMPLETED  {{"done": 1}}'
    gone = _run(coordinator, "runs", "wait", run_id, "--for", "waiting", ok=False)
    assert gone.exit_code == 1 and "COMPLETED" in gone.output
