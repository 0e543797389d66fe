"""Checkpoint retention: a live attempt keeps its newest checkpoints, older ones leave the store."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, FakeAgent, deploy, running, start_coordinator, suspend_on, task, wait_status,
)
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2, common_pb2
from torpor.client import Client


class RecordingStore:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_prefix(self, prefix: str) -> int:
        self.deleted.append(prefix)
        return 1


@contextlib.contextmanager
def _running_with_store(start_coordinator: Any, task_id: str, **config: Any) -> Iterator[tuple]:
    """A coordinator whose janitor deletes into a recording store, and one RUNNING run of ``task_id`` on an agent."""
    store = RecordingStore()
    coord = start_coordinator(store=store, janitor_seconds=0.1, **config)
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task(task_id))
        agent = FakeAgent(f"127.0.0.1:{coord.port}", f"{task_id}-host").connect()
        try:
            yield store, c, agent, running(c, agent, task_id)
        finally:
            agent.close()


def test_a_long_run_keeps_only_its_newest_checkpoints(start_coordinator):
    with _running_with_store(start_coordinator, "long", keep_checkpoints=3) as (store, c, agent, run_id):
        prefix = f"runs/{run_id}/checkpoints/"
        for i in range(6):
            agent.checkpoint(run_id, f"ck-{i}", kind=common_pb2.PERIODIC)
            assert_eventually(lambda: len(c.get_run(run_id).checkpoints) == i + 1, 5)
        # The three oldest are released and deleted; the three newest stay for a restore to use.
        assert_eventually(lambda: sorted(store.deleted) == [f"{prefix}ck-{i}/" for i in range(3)], 5)
        # A host failure restores from the newest, which retention never touches.
        suspend_on(agent, run_id, "w1", until_unix=time.time() + 3600)
        wait_status(c, run_id, "SUSPENDED")
        assert_eventually(lambda: sorted(store.deleted) == [f"{prefix}ck-{i}/" for i in range(4)], 5)
        c.cancel_run(run_id)  # a finished run keeps nothing
        assert_eventually(lambda: sorted(store.deleted) == sorted(
            [f"{prefix}ck-{i}/" for i in range(6)] + [f"{prefix}ck-w1/"]), 5)


def test_a_checkpoint_that_lands_after_a_cancel_is_deleted_too(start_coordinator):
    with _running_with_store(start_coordinator, "late") as (store, c, agent, run_id):
        c.cancel_run(run_id)
        # The dump that was under way when the cancel came finishes and is reported.
        agent.checkpoint(run_id, "ck-late", kind=common_pb2.PERIODIC)
        assert_eventually(lambda: store.deleted == [f"runs/{run_id}/checkpoints/ck-late/"], 5)
        assert c.get_run(run_id).status == common_pb2.CANCELED


def test_a_stale_copys_checkpoint_is_deleted_and_the_copy_killed(start_coordinator):
    with _running_with_store(start_coordinator, "moved") as (store, c, agent, run_id):
        stale = agent_pb2.RunRef(run_id=run_id, generation=0)  # a generation the run no longer has
        agent.send(checkpoint_recorded=agent_pb2.CheckpointRecorded(run=stale, checkpoint=common_pb2.Checkpoint(
            id="ck-stale", kind=common_pb2.PERIODIC, location=f"runs/{run_id}/checkpoints/ck-stale/manifest.json")))
        kill = agent.wait_command("kill", run_id)
        assert kill.kill.run.generation == 0 and kill.kill.reason == "stale_generation"
        assert_eventually(lambda: store.deleted == [f"runs/{run_id}/checkpoints/ck-stale/"], 5)
        assert c.get_run(run_id).status == common_pb2.RUNNING  # the current copy is untouched
