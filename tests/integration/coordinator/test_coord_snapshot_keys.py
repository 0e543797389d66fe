"""The snapshot keys a coordinator hands agents in Registered: generated once in Postgres, or from key files;
and a restore refused for a missing key keeps its checkpoint and is tried again."""

from __future__ import annotations

import subprocess
import sys

import psycopg

import coord_support
from coord_support import FakeAgent, deploy, running, task
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2, common_pb2
from torpor._seal import Kek, Keyring, kek_id
from torpor.agent._snapshot import upload_image
from torpor.coordinator._snapshot_keys import load_keyring
from torpor.store import open_store

# The fixtures these tests use (assigned, not imported, so that the parameters naming them shadow nothing).
agents, client, coordinator, start_coordinator = (coord_support.agents, coord_support.client,
                                                  coord_support.coordinator, coord_support.start_coordinator)


def registered(coord) -> agent_pb2.Registered:
    a = FakeAgent(f"127.0.0.1:{coord.port}", f"keys-{coord.port}").connect()
    try:
        assert a.registered.wait(10), a.error
        return a.registered_message
    finally:
        a.close()


def test_without_a_key_file_one_key_is_generated_in_postgres_and_every_coordinator_hands_it_out(
        start_coordinator, postgres_url):
    first = start_coordinator()
    second = start_coordinator()
    r1, r2 = registered(first), registered(second)
    assert r1.HasField("snapshot_key") and len(r1.snapshot_key.key) == 32
    assert r1.snapshot_key.id == kek_id(r1.snapshot_key.key)
    assert r2.snapshot_key == r1.snapshot_key and not r1.old_snapshot_keys
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, key FROM snapshot_key").fetchall()
    assert rows == [(r1.snapshot_key.id, r1.snapshot_key.key)]
    first.stop(grace=0)
    assert registered(start_coordinator()).snapshot_key == r1.snapshot_key  # kept across restarts


def test_a_key_file_key_is_current_and_older_keys_open_only(start_coordinator):
    generated = registered(start_coordinator()).snapshot_key  # a deployment that began without a key file
    current, old = Kek.generate(), Kek.generate()
    r = registered(start_coordinator(snapshot_key=current, old_snapshot_keys=(old, current)))
    assert (r.snapshot_key.id, r.snapshot_key.key) == (current.id, current.key)
    # the older key files, and the Postgres key, so nothing sealed before the move to key files is stranded
    assert sorted(k.id for k in r.old_snapshot_keys) == sorted([old.id, generated.id])


def test_concurrent_first_starts_agree_on_one_key(start_coordinator, postgres_url):
    """Two coordinators generating at the same moment: the table holds one row, and both read it back."""
    from torpor.coordinator._db import Database

    dbs = [Database(postgres_url, pool_size=2) for _ in range(2)]
    for db in dbs:
        db.open()
    try:
        rings = [load_keyring(db, key=None) for db in dbs]
    finally:
        for db in dbs:
            db.close()
    assert rings[0] == rings[1]


def test_a_restore_refused_for_a_missing_key_keeps_its_checkpoint_and_is_tried_again(client, agents, monkeypatch):
    monkeypatch.setattr("torpor.coordinator._reports.KEY_PAUSE", 0.5)
    deploy(client, task("keyless", retry=dict(max_attempts=1)))
    a1 = agents("a1", slots=1)
    run_id = running(client, a1, "keyless")
    a1.checkpoint(run_id, "ck-p1", kind=common_pb2.PERIODIC, key_id="kek-0123456789abcdef")
    assert_eventually(lambda: len(client.get_run(run_id).checkpoints) == 1)
    assert client.get_run(run_id).checkpoints[0].key_id == "kek-0123456789abcdef"
    a2 = agents("a2", slots=1, auto_start=False)
    a1.heartbeat = False  # the host hangs: its run is restored elsewhere
    first = a2.wait_command("restore", run_id, timeout=10)
    # the agent is told which key the checkpoint was sealed under, and refuses anything else in its place
    assert first.restore.checkpoint_key_id == "kek-0123456789abcdef"
    a2.send(command_failed=agent_pb2.CommandFailed(
        run=a2.ref(run_id), command="restore", snapshot_key_missing=True,
        error="checkpoint ck-p1 of run ... is encrypted with snapshot key kek-0123456789abcdef, which was not given"))
    again = a2.wait_command("restore", run_id, timeout=10, after=a2.commands.index(first) + 1)
    assert again.restore.checkpoint_id == "ck-p1"  # not released, not fallen back from
    run = client.get_run(run_id)
    assert run.status == common_pb2.RESTORING and run.attempt == 1
    missing = [e for e in run.events if e.type == "snapshot_key_missing"]
    assert missing and "kek-0123456789abcdef" in missing[0].detail
    assert not [e for e in run.events if e.type == "checkpoint_unusable"]


def test_key_file_flags_refuse_a_readable_or_malformed_file(tmp_path, postgres_url):
    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    junk.chmod(0o600)
    for path, expected in ((loose, "has mode 0644"), (junk, "does not hold a snapshot key"),
                           (tmp_path / "absent.key", "does not exist")):
        out = subprocess.run([sys.executable, "-m", "torpor.cli", "coordinator", "--db", postgres_url,
                              "--listen", "127.0.0.1:0", "--snapshot-key-file", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and expected in out.stderr, out.stderr


def test_snapshots_fetch_decrypts_with_the_key_kept_in_postgres(start_coordinator, postgres_url, tmp_path):
    coord = start_coordinator()
    store = open_store((tmp_path / "store").as_uri())
    image = tmp_path / "image"
    image.mkdir()
    (image / "core-1.img").write_bytes(b"a task's core " * 100)
    m = upload_image(store, image, keys=coord.snapshot_keys, run_id="run-db", checkpoint_id="ck-db", kind="suspend",
                     criu_version="4.2", deployment_version="v")
    cli = [sys.executable, "-m", "torpor.cli", "snapshots", "fetch", "run-db"]
    out = subprocess.run([*cli, str(tmp_path / "out"), "--store", store.url, "--db", postgres_url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "core-1.img").read_bytes() == b"a task's core " * 100
    assert f"decrypted with {m.encryption.kek_id}" in out.stdout
    # A database that has no key: the error says which key the snapshot needs.
    other = Keyring(Kek.generate())
    upload_image(store, image, keys=other, run_id="run-x", checkpoint_id="ck-x", kind="suspend", criu_version="4.2",
                 deployment_version="v")
    refused = subprocess.run([*cli[:-1], "run-x", str(tmp_path / "x"), "--store", store.url,
                              "--db", postgres_url], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and other.current.id in refused.stderr, refused.stderr
