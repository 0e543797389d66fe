"""The store sweeper: orphaned checkpoint folders leave the store; named, young and unfinished ones stay.

Real Postgres (checkpoint rows recorded through the agent channel), a real
directory store and a real S3 server (MinIO). A directory store's folders are
made old with os.utime; S3 times cannot be set, so there the old objects are
written first, the store's clock is waited out past them, and the sweep's
``now`` is put just after the young ones.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, FakeAgent, deploy, running, start_coordinator, task,
)
from helpers import assert_eventually, free_port
from torpor._proto.v1 import common_pb2
from torpor.client import Client
from torpor.coordinator._sweeper import _LOCK_KEY, Sweeper
from torpor.store import S3Options, Store, open_store
from torpor.store._file import FileStore
from torpor.store._open import TEMP_SUFFIX

MiB = 1024 * 1024
HOUR = 3600.0


class Scene:
    """A coordinator with one RUNNING run on a fake agent, and the store its sweeper would sweep."""

    def __init__(self, coord: Any, client: Client, agent: FakeAgent, run_id: str, store: Store) -> None:
        self.coord, self.client, self.agent, self.run_id, self.store = coord, client, agent, run_id, store

    def folder(self, ckpt: str, run_id: str | None = None) -> str:
        return f"runs/{run_id or self.run_id}/checkpoints/{ckpt}/"

    def record(self, ckpt: str) -> None:
        """The agent reports checkpoint ``ckpt``; returns once the coordinator has its row."""
        n = len(self.client.get_run(self.run_id).checkpoints)
        self.agent.checkpoint(self.run_id, ckpt, kind=common_pb2.PERIODIC)
        assert_eventually(lambda: len(self.client.get_run(self.run_id).checkpoints) == n + 1, 10)

    def put_snapshot(self, prefix: str, *, manifest: bool = True) -> None:
        self.store.put_bytes(prefix + "snapshot.zst", os.urandom(1000))
        self.store.put_bytes(prefix + "dump.log", b"criu said things")
        if manifest:
            self.store.put_bytes(prefix + "manifest.json", b"{}")

    def sweeper(self, *, grace: float) -> Sweeper:
        return Sweeper(self.coord.db, self.store, every=HOUR, grace=grace, healthy_for=lambda: math.inf)

    def folders(self) -> list[str]:
        return [f.prefix for f in self.store.folders("runs/", depth=3).folders]


@pytest.fixture
def scene(start_coordinator: Any, any_store: Store) -> Iterator[Scene]:
    # The coordinator's own sweeper thread is off: these tests sweep when they choose.
    coord = start_coordinator(store=any_store, orphan_sweep_seconds=0)
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("sweep-me"))
        agent = FakeAgent(f"127.0.0.1:{coord.port}", "sweep-host").connect()
        try:
            yield Scene(coord, c, agent, running(c, agent, "sweep-me"), any_store)
        finally:
            agent.close()


def make_old(store: Store, prefixes: list[str]) -> None:
    """Make these folders two hours old (directory store: their files' and directories' times)."""
    assert isinstance(store, FileStore)
    old = time.time() - 2 * HOUR
    for prefix in prefixes:
        top = store.root / prefix
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                os.utime(os.path.join(dirpath, name), (old, old))
            os.utime(dirpath, (old, old))


def wait_out_the_store_clock(store: Store, seconds: float) -> None:
    """Until the store's clock is ``seconds`` past the newest object in it (S3 times cannot be set)."""
    newest = max(f.newest for f in store.folders("runs/", depth=3).folders)
    assert_eventually(lambda: store.folders("runs/", depth=3).listed_at > newest + seconds, 15, interval=0.2)


def unfinished(request: pytest.FixtureRequest, store: Store) -> list[str]:
    if isinstance(store, FileStore):
        return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*" + TEMP_SUFFIX))
    target = request.getfixturevalue("s3_target")
    return sorted(u["Key"][len(target.prefix):] for u in target.multipart_uploads())


def leave_dead_upload(request: pytest.FixtureRequest, store: Store, key: str) -> Any:
    """What an agent killed mid-upload leaves: a temporary file, or a multipart upload with a part in it."""
    if isinstance(store, FileStore):
        w = store.open_writer(key)
        w.write(os.urandom(64 * 1024))
        w._file.flush()  # type: ignore[attr-defined]
        return w
    target = request.getfixturevalue("s3_target")
    up = target.client.create_multipart_upload(Bucket=target.bucket, Key=target.prefix + key)
    target.client.upload_part(Bucket=target.bucket, Key=target.prefix + key, UploadId=up["UploadId"],
                              PartNumber=1, Body=os.urandom(5 * MiB))
    return None


def test_only_old_unreferenced_checkpoint_folders_are_swept(scene: Scene, request: pytest.FixtureRequest,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    s, store = scene, scene.store
    s.record("ck-kept")  # a live checkpoint of the running run: named by its row
    old = {
        "kept": s.folder("ck-kept"),
        "no-manifest": s.folder("ck-died-before-manifest"),  # the agent died between archive and manifest
        "failed": s.folder("ck-failed-dump"),  # a failed dump uploads its CRIU log, and nothing reports it
        "gone-run": s.folder("ck-x", run_id="run-that-was-deleted"),
        "mid-upload": s.folder("ck-killed-mid-upload"),
    }
    s.put_snapshot(old["kept"])
    s.put_snapshot(old["no-manifest"], manifest=False)
    store.put_bytes(old["failed"] + "dump.failed.log", b"Error (criu/cr-dump.c): ...")
    s.put_snapshot(old["gone-run"])
    dead = leave_dead_upload(request, store, old["mid-upload"] + "snapshot.zst")
    store.put_bytes(f"runs/{s.run_id}/logs/a/b", b"not a checkpoint folder: never touched")
    store.put_bytes("deployments/v1/bundle.tar.zst", b"outside the snapshot area")
    if isinstance(store, FileStore):
        make_old(store, [*old.values(), f"runs/{s.run_id}/logs/"])
    else:
        wait_out_the_store_clock(store, 2.0)

    # Young: a finished upload whose report may still be on its way, and an upload under way.
    young = s.folder("ck-just-uploaded")
    s.put_snapshot(young)
    live_key = s.folder("ck-uploading") + "snapshot.zst"
    live = store.open_writer(live_key)
    try:
        live.write(os.urandom(6 * MiB))  # more than an S3 part: a multipart upload is under way
        if isinstance(store, FileStore):
            grace, now = HOUR, None
        else:
            grace = 1.0
            now = max(f.newest for f in store.folders("runs/", depth=3).folders) + 0.5
        with caplog.at_level(logging.INFO, logger="torpor.coordinator._sweeper"):
            result = s.sweeper(grace=grace).sweep(now=now)
        assert result is not None and result.complete
        swept = sorted(c.folder.prefix for c in result.swept)
        assert swept == sorted([old["no-manifest"], old["failed"], old["gone-run"], old["mid-upload"]])
        assert result.candidates == 5  # the four orphans and the named one

        assert s.folders() == sorted([old["kept"], young, s.folder("ck-uploading"), f"runs/{s.run_id}/logs/a/"])
        assert store.list(old["kept"]) == [old["kept"] + k for k in ("dump.log", "manifest.json", "snapshot.zst")]
        assert store.exists("deployments/v1/bundle.tar.zst")
        assert unfinished(request, store) != []  # the live upload's
        assert not any(u.startswith(old["mid-upload"]) for u in unfinished(request, store))
        if isinstance(store, FileStore):
            for prefix in swept:
                assert not (store.root / prefix).exists(), prefix  # no empty directory left behind either
        # Each deletion is logged with its folder and age.
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("swept orphaned")]
        assert len(logged) == 4 and all("s old" in m for m in logged)
        assert any(old["gone-run"] in m for m in logged)

        # The upload under way was not disturbed: it completes.
        live.write(os.urandom(MiB))
        live.commit()
        assert store.exists(live_key)
    finally:
        live.abort()
        if dead is not None:
            dead.abort()


def test_a_report_applied_during_the_sweep_keeps_its_folder(scene: Scene) -> None:
    """The rows are asked again just before each deletion."""
    s = scene
    first, late = s.folder("ck-a-orphan"), s.folder("ck-b-reported-late")
    for prefix in (first, late):
        s.put_snapshot(prefix)
    real_delete = s.store.delete_prefix
    reported: list[str] = []

    def delete_prefix(prefix: str, *, partial: bool = False) -> int:
        if not reported:  # while the first orphan is deleted, the late report lands
            reported.append(prefix)
            s.record("ck-b-reported-late")
        return real_delete(prefix, partial=partial)

    s.store.delete_prefix = delete_prefix  # type: ignore[method-assign]
    newest = max(f.newest for f in s.store.folders("runs/", depth=3).folders)
    result = s.sweeper(grace=1.0).sweep(now=newest + 2 * HOUR)
    assert result is not None
    assert [c.folder.prefix for c in result.swept] == [first]
    assert reported == [first]
    assert s.folders() == [late]


def test_only_one_coordinator_sweeps_at_a_time(scene: Scene, postgres_url: str) -> None:
    s = scene
    orphan = s.folder("ck-orphan")
    s.put_snapshot(orphan)
    later = max(f.newest for f in s.store.folders("runs/", depth=3).folders) + 2 * HOUR
    with psycopg.connect(postgres_url, autocommit=True) as other:  # another coordinator, sweeping
        other.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        assert s.sweeper(grace=HOUR).sweep(now=later) is None
        assert s.folders() == [orphan]
        other.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    result = s.sweeper(grace=HOUR).sweep(now=later)
    assert result is not None and [c.folder.prefix for c in result.swept] == [orphan]
    # The lock was given back: the next sweep (here, of nothing) runs too.
    assert s.sweeper(grace=HOUR).sweep(now=later) is not None


def test_a_store_that_is_down_is_tried_again_next_time(start_coordinator: Any, file_store: Store,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    coord = start_coordinator(store=file_store, orphan_sweep_seconds=0)
    down = open_store("s3://torpor-down/x", s3=S3Options(
        endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="k", secret_access_key="s", max_attempts=1))
    with caplog.at_level(logging.WARNING, logger="torpor.coordinator._sweeper"):
        result = Sweeper(coord.db, down, every=HOUR, grace=HOUR, healthy_for=lambda: math.inf).sweep()
    assert result is not None and not result.complete and result.swept == []
    assert any("cannot list" in r.getMessage() and "trying again" in r.getMessage() for r in caplog.records)
    # It let go of the lock: once the store is back, the sweep runs.
    file_store.put_bytes("runs/r/checkpoints/c/snapshot.zst", b"x")
    make_old(file_store, ["runs/r/checkpoints/c/"])
    result = Sweeper(coord.db, file_store, every=HOUR, grace=HOUR, healthy_for=lambda: math.inf).sweep()
    assert result is not None and [c.folder.prefix for c in result.swept] == ["runs/r/checkpoints/c/"]


def test_the_coordinator_sweeps_on_its_own_and_spares_an_upload_under_way(start_coordinator: Any,
                                                                         file_store: Store) -> None:
    """The wiring: CoordinatorConfig's two fields, the sweeper thread, the wait for a settled database."""
    grace = 3.0
    t0 = time.monotonic()
    coord = start_coordinator(store=file_store, orphan_sweep_seconds=0.2, orphan_grace_seconds=grace,
                              lease_seconds=3.0, heartbeat_seconds=1.0)
    assert coord.timers.sweeper is not None
    stop = threading.Event()

    def keep_uploading(w: Any) -> None:
        while not stop.wait(0.05):
            w.write(os.urandom(64 * 1024))  # a whole buffer's worth: the file's time moves each time

    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("swept-live"))
        agent = FakeAgent(f"127.0.0.1:{coord.port}", "live-host").connect()
        writer: threading.Thread | None = None
        try:
            s = Scene(coord, c, agent, running(c, agent, "swept-live"), file_store)
            s.record("ck-kept")
            orphan, kept, slow = s.folder("ck-orphan"), s.folder("ck-kept"), s.folder("ck-slow-upload")
            s.put_snapshot(orphan, manifest=False)
            s.put_snapshot(kept)
            make_old(file_store, [orphan, kept])
            # An upload under way for longer than the grace: it keeps writing, so it is never old.
            live = file_store.open_writer(slow + "snapshot.zst")
            live.write(os.urandom(64 * 1024))
            writer = threading.Thread(target=keep_uploading, args=(live,), daemon=True)
            writer.start()
            assert_eventually(lambda: orphan not in s.folders(), 20, interval=0.1)
            # Not before the coordinator had reached the database without a gap for a whole grace.
            assert time.monotonic() - t0 >= grace
            stop.set()
            writer.join()
            assert s.folders() == sorted([kept, slow])
            live.commit()
            assert file_store.exists(slow + "snapshot.zst")
        finally:
            stop.set()
            if writer is not None:
                writer.join()
            agent.close()
