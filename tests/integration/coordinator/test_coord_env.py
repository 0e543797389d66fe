"""A project's variables in the RunSpecs the coordinator sends: current values at each start and attempt, none
in a restore, secrets sealed for the agent (and still given after a key rotation), never logged; bad input
changes nothing."""

from __future__ import annotations

import json
import logging
import uuid

import grpc
import psycopg
import pytest

import coord_support
from coord_support import API_KEY, FakeAgent, deploy, task, wait_status
from helpers import assert_eventually
from torpor._proto.v1 import common_pb2
from torpor._seal import Kek, keyring_of
from torpor._secretbox import open_run_env
from torpor.client import Client
from torpor._errors import RPCError
from torpor.coordinator._env import MAX_TOTAL_BYTES, MAX_VALUE_BYTES

# The fixtures these tests use (assigned, not imported, so that the parameters naming them shadow nothing).
agents, client, coordinator, start_coordinator = (coord_support.agents, coord_support.client,
                                                  coord_support.coordinator, coord_support.start_coordinator)


def _opened(agent: FakeAgent, spec) -> dict[str, str]:
    """What the real agent gives the container: the spec's env, its secrets opened with the keys it was handed."""
    r = agent.registered_message
    ring = keyring_of((r.snapshot_key.id, r.snapshot_key.key), [(k.id, k.key) for k in r.old_snapshot_keys])
    return open_run_env(ring, spec)


def _vars(client: Client, project: str) -> dict[str, str | None]:
    return {v.name: (None if v.secret else v.value) for v in client.list_env(project).vars}


def test_each_attempt_gets_the_values_then_current_and_a_restore_gets_none(client, agents, caplog):
    caplog.set_level(logging.DEBUG)
    first, second = f"tok-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    deploy(client, task("envy", retry=dict(max_attempts=3, factor=1, min_timeout=0.1, max_timeout=1,
                                           randomize=False)))
    client.set_env("tests", {"REGION": "eu-west"})
    client.set_env("tests", {"TOKEN": first}, secret=True)
    a1 = agents("a1")
    run_id = client.trigger("envy", None).run_id
    start = a1.wait_command("start", run_id).start.spec
    assert dict(start.env) == {"REGION": "eu-west"}  # secrets do not travel in clear
    assert first.encode() not in start.SerializeToString()
    assert _opened(a1, start) == {"REGION": "eu-west", "TOKEN": first}

    client.set_env("tests", {"REGION": "us-east"})
    client.set_env("tests", {"TOKEN": second}, secret=True)
    wait_status(client, run_id, "RUNNING")
    after = len(a1.commands)
    a1.exit(run_id, error="ValueError: boom")
    retry = a1.wait_command("start", run_id, after=after).start.spec
    assert retry.attempt == 2 and _opened(a1, retry) == {"REGION": "us-east", "TOKEN": second}

    wait_status(client, run_id, "RUNNING")
    a1.checkpoint(run_id, "ck-env", kind=common_pb2.PERIODIC)
    assert_eventually(lambda: len(client.get_run(run_id).checkpoints) == 1)
    a2 = agents("a2")
    a1.heartbeat = False  # its host hangs: the run is restored on a2 with the environment in its snapshot
    restore = a2.wait_command("restore", run_id, timeout=15).restore.spec
    assert not restore.env and not restore.sealed_env and _opened(a2, restore) == {}

    shown = str(client.get_run(run_id)) + caplog.text
    assert first not in shown and second not in shown
    assert "set TOKEN (secret)" in caplog.text  # the coordinator's log was captured, and names only the variable


def test_a_secret_sealed_under_an_old_key_still_reaches_runs_after_a_rotation(start_coordinator, postgres_url):
    secret = f"tok-{uuid.uuid4().hex}"
    old, new = Kek.generate(), Kek.generate()
    c1 = start_coordinator(snapshot_key=old)
    with Client(f"127.0.0.1:{c1.port}", api_key=API_KEY) as cl:
        deploy(cl, task("rotated", retry=dict(max_attempts=1)))
        cl.set_env("tests", {"ROTATED": secret}, secret=True)
    c1.stop(grace=0)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT key_id, sealed FROM project_env WHERE project = 'tests' AND name = 'ROTATED'"
                           ).fetchone()
    assert row[0] == old.id and secret.encode() not in bytes(row[1])

    c2 = start_coordinator(snapshot_key=new, old_snapshot_keys=(old,))
    agent = FakeAgent(f"127.0.0.1:{c2.port}", "rot-a").connect()
    try:
        with Client(f"127.0.0.1:{c2.port}", api_key=API_KEY) as cl:
            run_id = cl.trigger("rotated", None).run_id
            spec = agent.wait_command("start", run_id).start.spec
            assert spec.env_key_id == new.id  # sealed again for the trip under the current key
            assert _opened(agent, spec)["ROTATED"] == secret
    finally:
        agent.close()
    c2.stop(grace=0)

    # Without the old key the secret cannot be given: the run waits, saying why, and is not started without it.
    c3 = start_coordinator(snapshot_key=Kek.generate())
    agent = FakeAgent(f"127.0.0.1:{c3.port}", "rot-b").connect()
    try:
        with Client(f"127.0.0.1:{c3.port}", api_key=API_KEY) as cl:
            run_id = cl.trigger("rotated", None).run_id
            assert_eventually(lambda: old.id in cl.get_run(run_id).unplaced, timeout=10)
            assert "ROTATED" in cl.get_run(run_id).unplaced and agent.count("start", run_id) == 0
    finally:
        agent.close()


@pytest.mark.parametrize("values,fragment", [
    ({"OK_TOO": "x", "2BAD": "y"}, "'2BAD' is not a variable name"),
    ({"OK_TOO": "x", "TORPOR_RUN_ID": "y"}, "torpor's own"),
    ({"OK_TOO": "x", "PYTHONPATH": "/tmp"}, "torpor sets it for every run"),
    ({"OK_TOO": "x", "BIG": "v" * (MAX_VALUE_BYTES + 1)}, "the limit is 32,768"),
    ({"OK_TOO": "x", "NUL": "a\0b"}, "NUL"),
    ({f"MANY_{i}": "v" * (MAX_VALUE_BYTES - 100) for i in range(MAX_TOTAL_BYTES // MAX_VALUE_BYTES + 1)},
     "for all of them"),
])
def test_bad_input_is_refused_saying_why_and_nothing_changes(client, values, fragment):
    client.set_env("tests", {"OK_TOO": "before", "KEPT": "1"})
    with pytest.raises(RPCError) as err:
        client.set_env("tests", values)
    assert err.value.grpc_status == grpc.StatusCode.INVALID_ARGUMENT and fragment in str(err.value), err.value
    assert _vars(client, "tests") == {"KEPT": "1", "OK_TOO": "before"}


def test_the_total_counts_what_the_project_already_has(client):
    half = "v" * (MAX_VALUE_BYTES - 64)
    client.set_env("tests", {f"HAS_{i}": half for i in range(MAX_TOTAL_BYTES // MAX_VALUE_BYTES - 1)})
    client.set_env("tests", {"HAS_0": half}, secret=True)  # replacing one counts it once
    with pytest.raises(RPCError, match="for all of them"):
        client.set_env("tests", {"ONE_MORE": half, "AND_ANOTHER": half})
    assert "ONE_MORE" not in _vars(client, "tests")


def _cli(coordinator, *args: str, stdin: str | None = None):
    from click.testing import CliRunner

    from torpor.cli import cli

    env = {"TORPOR_ADDRESS": f"127.0.0.1:{coordinator.port}", "TORPOR_API_KEY": API_KEY}
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def test_the_cli_reads_a_secret_from_stdin_and_refuses_ambiguous_assignments(coordinator, client, postgres_url):
    secret = f"tok-{uuid.uuid4().hex}"
    ok = _cli(coordinator, "env", "set", "--project", "tests", "FROM_STDIN=-", "--secret", "--json",
              stdin=secret + "\n")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["vars"] == [{"name": "FROM_STDIN", "secret": True, "value": None,
                                              "updated_at": json.loads(ok.output)["vars"][0]["updated_at"]}]
    with psycopg.connect(postgres_url) as conn:
        key_id, sealed = conn.execute("SELECT key_id, sealed FROM project_env WHERE name = 'FROM_STDIN'").fetchone()
    assert key_id and len(bytes(sealed)) == len(secret) + 28  # the line, without its newline, sealed (nonce and tag)

    twice = _cli(coordinator, "env", "set", "--project", "tests", "A=1", "A=2")
    assert twice.exit_code == 2 and "A is given twice" in twice.output, twice.output
    both = _cli(coordinator, "env", "set", "--project", "tests", "A=-", "B=-", stdin="x\n")
    assert both.exit_code == 2 and "A and B both read standard input" in both.output, both.output
    bad = _cli(coordinator, "env", "set", "--project", "tests", "GOOD=1", "BAD-NAME=2")
    assert bad.exit_code == 1 and "'BAD-NAME' is not a variable name" in bad.output, bad.output
    assert _vars(client, "tests") == {"FROM_STDIN": None}
