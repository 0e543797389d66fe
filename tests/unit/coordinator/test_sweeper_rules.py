"""Which store folders the orphan sweeper may delete: the pure part of the rule."""

from __future__ import annotations

from torpor.agent._snapshot import Manifest, archive_key, checkpoint_prefix
from torpor.coordinator._sweeper import AREA, checkpoint_folder, folder_of, old_checkpoint_folders, orphans
from torpor.store._base import Folder


def folder(prefix: str, newest: float) -> Folder:
    return Folder(prefix=prefix, newest=newest, objects=1, size=1)


def test_the_sweeper_reads_the_layout_the_agent_writes() -> None:
    """A drift here would make the sweeper blind to snapshots, or worse, misjudge them."""
    prefix = checkpoint_prefix("run-1", "ck-9") + "/"
    assert prefix.startswith(AREA)
    assert checkpoint_folder(prefix) == ("run-1", "ck-9")
    m = Manifest(checkpoint_id="ck-9", run_id="run-1", kind="periodic", created_at="", criu_version="",
                 deployment_version="", parent=None, archive_key=archive_key("run-1", "ck-9"), archive_size=0,
                 archive_sha256="", raw_bytes=0, files=[])
    # A checkpoint row's location is the manifest's key: its folder is the one the agent filled.
    assert folder_of(m.key) == prefix
    assert m.archive_key.startswith(prefix)


def test_only_checkpoint_folders_count() -> None:
    assert checkpoint_folder("runs/r/checkpoints/c/") == ("r", "c")
    for other in ["runs/r/logs/c/", "runs/r/checkpoints/", "deployments/v/x/", "runs/r/checkpoints/c",
                  "runs/r/checkpoints/c/d/"]:
        assert checkpoint_folder(other) is None, other


def test_old_unreferenced_checkpoint_folders_are_the_orphans() -> None:
    now, grace = 10_000.0, 3600.0
    listed = [
        folder("runs/r/checkpoints/old-orphan/", now - 7200),
        folder("runs/r/checkpoints/old-kept/", now - 7200),
        folder("runs/r/checkpoints/young/", now - 60),
        folder("runs/r/checkpoints/just-at-grace/", now - grace),
        folder("runs/r/checkpoints/from-the-future/", now + 120),  # a writer's clock ahead: young
        folder("runs/r/logs/old/", now - 7200),  # not a checkpoint folder: never touched
    ]
    candidates = old_checkpoint_folders(listed, now=now, grace=grace)
    assert [(c.run_id, c.checkpoint_id, c.age) for c in candidates] == [
        ("r", "old-orphan", 7200.0), ("r", "old-kept", 7200.0)]
    found = orphans(candidates, {"runs/r/checkpoints/old-kept/", "runs/r/checkpoints/young/"})
    assert [c.folder.prefix for c in found] == ["runs/r/checkpoints/old-orphan/"]
