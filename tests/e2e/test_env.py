"""`torpor env`: a project's variables and secrets reach its runs; a secret is never shown or stored in clear."""

from __future__ import annotations

import hashlib
import json
import uuid

import psycopg
from e2e_support import trigger, wait_status

DONE = {"COMPLETED", "FAILED", "CRASHED"}


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

    shown = [out, listed_text, json.dumps(listed), stack.cli("runs", "show", run_id, "--json").stdout,
             stack.cli("runs", "show", run_id).stdout, stack.cli("runs", "logs", run_id).stdout]
    shown += [p.read_text(errors="replace") for p in (stack.dir / "logs").glob("*.log")]
    assert not [s for s in shown if secret in s], "the secret was shown or logged"
    with psycopg.connect(_dsn(stack), connect_timeout=5, passfile="/dev/null") as conn:
        rows = conn.execute("SELECT name, value, sealed FROM project_env WHERE project = 'e2e'").fetchall()
        commands = conn.execute("SELECT payload FROM agent_commands").fetchall()
    stored = b"".join((r[1] or "").encode() + bytes(r[2] or b"") for r in rows)
    stored += b"".join(bytes(c[0]) for c in commands)
    assert secret.encode() not in stored and b"eu-west" in stored


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
