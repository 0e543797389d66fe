"""The public API: inputs, idempotency, listing, replay, deploy, auth, TLS, migrations."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest

from helpers import assert_eventually, need
from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, JOIN_TOKEN, FakeAgent, agents, client, coordinator, deploy, start_coordinator, task,
)
from torpor._errors import ErrorCode, RPCError
from torpor._proto.v1 import common_pb2, coordinator_pb2
from torpor.client import Client, ClientTLS, trigger_request
from torpor.coordinator import Database, create_key, latest_version, migrate, revoke_key, schema_version


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _refused(fn, *args, **kwargs) -> RPCError:
    with pytest.raises(RPCError) as err:
        fn(*args, **kwargs)
    return err.value


BAD_INPUTS = [
    (dict(task="nope"), "unknown task 'nope': no deployed version defines it"),
    (dict(task="t", payload_json="{not json"), "payload is not valid JSON: Expecting property name"),
    (dict(task="t", payload_json='"' + "x" * (3 * 1024 * 1024) + '"'), "payload is 3145730 bytes; the limit is 3145728 bytes"),
    (dict(task="t", tags=[f"t{i}" for i in range(11)]), "11 tags given; at most 10 are allowed"),
    (dict(task="t", idempotency_key="k" * 2049), "idempotency key has 2049 characters; at most 2048 are allowed"),
    (dict(task="t", version="v-none"), "unknown task 't' in version 'v-none'"),
    (dict(task="t", parent_run_id="run_ghost"), "parent run 'run_ghost' does not exist"),
    (dict(task="t", delay=-1), "delay must be zero or positive"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS, ids=[m.split(":")[0][:30] for _, m in BAD_INPUTS])
def test_bad_trigger_is_invalid_argument_and_writes_nothing(client, postgres_url, kwargs, message):
    deploy(client, task("t"))
    before = [_count(postgres_url, t) for t in ("runs", "run_events", "idempotency_keys")]
    req = trigger_request(**{"payload": None, **kwargs})
    with pytest.raises(grpc.RpcError) as raw:
        client._stub.Trigger(req, metadata=client._metadata)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raw.value.details(), raw.value.details()
    err = _refused(client.trigger, **{"payload": None, **kwargs})
    assert err.code == ErrorCode.INVALID_ARGUMENT
    assert [_count(postgres_url, t) for t in ("runs", "run_events", "idempotency_keys")] == before


def test_bad_batch_writes_nothing(client, postgres_url):
    deploy(client, task("t"))
    too_many = [trigger_request("t", i) for i in range(1001)]
    err = _refused(client.batch_trigger, too_many)
    assert err.code == ErrorCode.INVALID_ARGUMENT and err.message == "batch has 1001 items; at most 1000 are allowed"
    one_bad = [trigger_request("t", 1), trigger_request("t", 2, idempotency_key="k"), trigger_request("t", payload_json="[")]
    err = _refused(client.batch_trigger, one_bad)
    assert err.code == ErrorCode.INVALID_ARGUMENT and err.message.startswith("item 2: payload is not valid JSON")
    unknown_task = [trigger_request("t", 1), trigger_request("gone", 2)]
    err = _refused(client.batch_trigger, unknown_task)
    assert "unknown task 'gone'" in err.message
    assert _count(postgres_url, "runs") == 0 and _count(postgres_url, "idempotency_keys") == 0
    ok = client.batch_trigger([trigger_request("t", i) for i in range(1000)])
    assert len({r.run_id for r in ok}) == 1000 and _count(postgres_url, "runs") == 1000


def test_idempotency_key_returns_the_existing_run_per_task(client):
    deploy(client, task("t"), task("u"))
    first = client.trigger("t", 1, idempotency_key="order-42")
    again = client.trigger("t", 2, idempotency_key="order-42")
    assert not first.existing and again.existing and again.run_id == first.run_id
    assert again.run.payload_json == "1"
    other_task = client.trigger("u", 1, idempotency_key="order-42")
    assert not other_task.existing and other_task.run_id != first.run_id


def test_idempotency_key_concurrent_triggers_make_one_run(client):
    deploy(client, task("t"))
    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(lambda i: client.trigger("t", i, idempotency_key="same").run_id, range(40)))
    assert len(ids) == 1


def test_idempotency_key_expires_after_its_ttl(client):
    deploy(client, task("t"))
    first = client.trigger("t", idempotency_key="short", idempotency_key_ttl=0.3).run_id

    def fresh():
        resp = client.trigger("t", idempotency_key="short", idempotency_key_ttl=0.3)
        assert resp.run_id == first or not resp.existing
        return not resp.existing
    assert_eventually(fresh, 5)


def test_get_list_filter_paginate(client):
    deploy(client, task("t"), task("u"))
    ids = [client.trigger("t", i, tags=["even" if i % 2 == 0 else "odd"]).run_id for i in range(7)]
    client.trigger("u", 0)
    err = _refused(client.get_run, "run_nope")
    assert err.code == ErrorCode.NOT_FOUND
    run = client.get_run(ids[0])
    assert run.task == "t" and run.payload_json == "0" and list(run.tags) == ["even"] and run.queue == "t"
    seen, token = [], ""
    while True:
        page = client.list_runs(task="t", page_size=3, page_token=token)
        seen += [r.id for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    assert len(client.list_runs(tag="odd").runs) == 3
    assert len(client.list_runs(status=["QUEUED"]).runs) == 8
    assert client.list_runs(status=["COMPLETED"]).runs == []
    assert _refused(client.list_runs, page_token="x").code == ErrorCode.INVALID_ARGUMENT


def test_replay_uses_latest_version_and_same_payload(client):
    deploy(client, task("t"))
    original = client.trigger("t", {"a": 1}, tags=["x"]).run
    newer = deploy(client, task("t"))
    replay = client.replay_run(original.id).run
    assert replay.id != original.id and replay.payload_json == original.payload_json
    assert replay.version == newer and list(replay.tags) == ["x"]


def test_deploy_is_idempotent_and_validated(client):
    version = deploy(client, task("t"))
    again = client.deploy(version, [task("t")])
    assert not again.created
    assert _refused(client.deploy, "v-empty", []).code == ErrorCode.INVALID_ARGUMENT
    assert "declared twice" in _refused(client.deploy, "v-dup", [task("a"), task("a")]).message


def test_auth_refusals(coordinator, postgres_url):
    address = f"127.0.0.1:{coordinator.port}"
    for key in (None, "wrong", JOIN_TOKEN):
        with Client(address, api_key=key) as c:
            err = _refused(c.list_agents)
            assert err.code == ErrorCode.UNAUTHENTICATED, key
    # a client key cannot open the agent channel, nor can a missing token
    for token in (API_KEY, "nope"):
        agent = FakeAgent(address, "intruder", token=token).connect()
        assert_eventually(lambda: agent.error is not None, 5)
        assert agent.error.code() == grpc.StatusCode.UNAUTHENTICATED
        agent.close()
    # keys created in the database work until revoked; only their hash is stored
    db = Database(postgres_url, pool_size=1)
    db.open()
    try:
        key_id, secret = db.run(create_key, "client", "ci")
        with psycopg.connect(postgres_url) as conn:
            stored = conn.execute("SELECT secret_sha256 FROM api_keys WHERE id = %s", (key_id,)).fetchone()[0]
        assert secret not in stored and len(stored) == 64
        with Client(address, api_key=secret) as c:
            assert c.list_agents() == []
            db.run(revoke_key, key_id)

            def refused_now() -> bool:
                try:
                    c.list_agents()
                    return False
                except RPCError as exc:
                    return exc.code == ErrorCode.UNAUTHENTICATED
            assert_eventually(refused_now, 10)
    finally:
        db.close()


def test_tls(start_coordinator, tmp_path):
    need(shutil.which("openssl") is not None, "openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    from torpor.coordinator import TLSConfig

    coord = start_coordinator(tls=TLSConfig(cert_file=str(cert), key_file=str(key)))
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY, tls=ClientTLS(ca_file=str(cert))) as c:
        assert c.list_agents() == []
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY, timeout=3) as plain:
        assert _refused(plain.list_agents).code == ErrorCode.UNAVAILABLE


def test_migrations_from_empty_and_again(empty_postgres_url):
    assert schema_version(empty_postgres_url) == 0
    assert migrate(empty_postgres_url) == (0, latest_version())
    assert migrate(empty_postgres_url) == (latest_version(), latest_version())
    with psycopg.connect(empty_postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM torpor_schema_version").fetchone()[0] == 1


def test_coordinator_migrates_at_start(empty_postgres_url, start_coordinator):
    coord = start_coordinator(db_url=empty_postgres_url, migrate=True)
    assert schema_version(empty_postgres_url) == latest_version()
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("t"))
        assert c.trigger("t").run.status == common_pb2.QUEUED


def test_unauthenticated_when_auth_disabled_is_allowed(start_coordinator):
    coord = start_coordinator(auth=False)
    with Client(f"127.0.0.1:{coord.port}") as c:
        assert c.list_agents() == []


def test_completetoken_needs_valid_json(client):
    req = coordinator_pb2.CompleteTokenRequest(token_id="x", data_json="{")
    with pytest.raises(grpc.RpcError) as raw:
        client._stub.CompleteToken(req, metadata=client._metadata)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "data is not valid JSON" in raw.value.details()
