"""`torpor env`: a project's variables and secrets reach its runs; a secret is never shown or stored in clear."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from e2e_support import PROJECT, make_stack, trigger, wait_status

DONE = {"COMPLETED", "FAILED", "CRASHED"}


@pytest.fixture(scope="module")
def stack():
    """Its own stack, with the coordinator and agent logging everything (TORPOR_DEBUG): a leak at any level shows."""
    yield from make_stack(1, "--slots", "4", env={"TORPOR_DEBUG": "1"})


def _dsn(stack) -> str:
    port = int((stack.dir / "postgres.port").read_text())
    password = (stack.dir / "secrets" / "postgres-password").read_text().strip()
    return f"host=127.0.0.1 port={port} user=postgres password={password} dbname=torpor"


def test_a_secret_reaches_the_run_and_is_shown_or_stored_nowhere(stack):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    stack.cli("env", "set", "--project", "e2e", "REGION=eu-west", "LOG_LEVEL=debug")
    out = stack.cli("env", "set", "--project", "e2e", "API_TOKEN=" + secret, "--secret").stdout
    listed_text = stack.cli("env", "list", "--project", "e2e").stdout
    listed = stack.cli_json("env", "list", "--project", "e2e")
    assert {v["name"]: v["value"] for v in listed["vars"]} == {"API_TOKEN": None, "LOG_LEVEL": "debug",
                                                               "REGION": "eu-west"}, listed
    assert "(secret)" in listed_text and "eu-west" in listed_text

    run_id = trigger(stack, "env-probe", {"plain": "REGION", "secret": "API_TOKEN"})
    run = wait_status(stack, run_id, DONE)
    assert run["status"] == "COMPLETED", run
    assert run["output"] == {"plain": "eu-west", "secret_sha256": hashlib.sha256(secret.encode()).hexdigest()}

    shown = {"env set": out, "env list": listed_text, "env list --json": json.dumps(listed),
             "runs show --json": stack.cli("runs", "show", run_id, "--json").stdout,
             "runs show": stack.cli("runs", "show", run_id).stdout, "runs logs": stack.cli("runs", "logs", run_id).stdout}
    logs = {p.name: p.read_text(errors="replace") for p in (stack.dir / "logs").glob("*.log")}
    # the coordinator's and agent's own logs are there, and are the ones that saw the secret being set and given
    assert "set API_TOKEN (secret)" in logs.get("coordinator.log", ""), sorted(logs)
    assert "registered with" in logs.get("dev-agent-1.log", ""), sorted(logs)
    run_logs = stack.agent_state("dev-agent-1") / "logs" / run_id
    shown.update({str(p): p.read_text(errors="replace") for p in run_logs.glob("*.log")})
    shown.update(logs)
    assert "env-probe ran" in shown["runs logs"]  # the run's own output is among what was read
    leaks = [where for where, text in shown.items() if secret in text]
    assert not leaks, f"the secret was shown or logged in {leaks}"

    with psycopg.connect(_dsn(stack), connect_timeout=5, passfile="/dev/null") as conn:
        rows = conn.execute("SELECT name, value, sealed FROM project_env WHERE project = 'e2e'").fetchall()
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        # every row of every table as text (bytea as hex): the secret is in none of them, in clear
        dump = {t: conn.execute(sql.SQL("SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM {} x").format(
            sql.Identifier(t))).fetchone()[0] for t in tables}
    assert {"project_env", "agent_commands", "runs", "run_events"} <= set(dump), sorted(dump)
    assert "eu-west" in dump["project_env"] and "API_TOKEN" in dump["project_env"]
    leaked = [t for t, text in dump.items() if secret in text or secret.encode().hex() in text]
    assert not leaked, f"the secret is stored in clear in {leaked}"
    assert {r[0] for r in rows} == {"API_TOKEN", "LOG_LEVEL", "REGION"}


def test_unset_and_bad_input_change_only_what_they_say(stack):
    stack.cli("env", "set", "--project", "e2e", "KEEP_ME=1", "GONE_SOON=2")
    bad = stack.cli("env", "set", "--project", "e2e", "KEEP_ME=changed", "2BAD=x", check=False)
    assert bad.returncode != 0 and "'2BAD' is not a variable name" in bad.stderr, bad
    reserved = stack.cli("env", "set", "--project", "e2e", "TORPOR_RUN_ID=x", check=False)
    assert reserved.returncode != 0 and "TORPOR_" in reserved.stderr
    missing = stack.cli("env", "unset", "--project", "e2e", "GONE_SOON", "NEVER_SET", check=False)
    assert missing.returncode != 0 and "no variable NEVER_SET" in missing.stderr, missing
    values = {v["name"]: v["value"] for v in stack.cli_json("env", "list", "--project", "e2e")["vars"]}
    assert values["KEEP_ME"] == "1" and values["GONE_SOON"] == "2", values

    stack.cli("env", "unset", "--project", "e2e", "GONE_SOON")
    run = wait_status(stack, trigger(stack, "env-probe", {"plain": "GONE_SOON"}), DONE)
    assert run["status"] == "COMPLETED" and run["output"]["plain"] is None, run
    run = wait_status(stack, trigger(stack, "env-probe", {"plain": "KEEP_ME"}), DONE)
    assert run["output"]["plain"] == "1", run


def _cli_in(stack, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torpor.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **stack.env}, timeout=120)


def test_the_project_is_the_one_of_torpor_toml_here_or_must_be_given(stack, tmp_path):
    stack.cli("env", "set", "--project", "e2e", "FROM_TOML=yes")
    here = _cli_in(stack, PROJECT, "env", "list", "--json")
    assert here.returncode == 0 and json.loads(here.stdout)["project"] == "e2e", here
    assert {v["name"]: v["value"] for v in json.loads(here.stdout)["vars"]}["FROM_TOML"] == "yes", here.stdout
    nowhere = _cli_in(stack, tmp_path, "env", "set", "X=1")
    assert nowhere.returncode == 2 and "give --project NAME" in nowhere.stderr, nowhere
    assert "X" not in {v["name"] for v in stack.cli_json("env", "list", "--project", "e2e")["vars"]}
