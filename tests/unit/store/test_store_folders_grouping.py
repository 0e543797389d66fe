"""Folding a listing into folders: the part both stores share."""

from __future__ import annotations

import pytest

from torpor._errors import ConfigError
from torpor.store._base import Folder, group_folders


def test_keys_fold_into_their_folder_with_the_newest_time() -> None:
    entries = [
        ("runs/r/checkpoints/a/manifest.json", 300.0, 2, False),
        ("runs/r/checkpoints/a/snapshot.zst", 100.0, 1000, False),
        ("runs/r/checkpoints/a/.snapshot.zst.x.torpor-tmp", 500.0, 0, True),
        ("runs/r/checkpoints/b/", 700.0, 0, None),  # a directory: its time only
        ("runs/r/checkpoints/b/x/y/z", 50.0, 7, False),
        ("runs/r/checkpoints/loose", 900.0, 1, False),  # above the folder level
        ("runs/r/", 900.0, 0, None),
        ("elsewhere/r/checkpoints/c/k", 900.0, 1, False),
    ]
    assert group_folders("runs/", 3, entries) == [
        Folder(prefix="runs/r/checkpoints/a/", newest=500.0, objects=2, size=1002, partial=1),
        Folder(prefix="runs/r/checkpoints/b/", newest=700.0, objects=1, size=7, partial=0),
    ]


def test_depth_counts_from_the_prefix() -> None:
    entries = [("a/b/c", 1.0, 1, False), ("a/d", 2.0, 1, False)]
    assert [f.prefix for f in group_folders("", 1, entries)] == ["a/"]
    assert [f.prefix for f in group_folders("a/", 1, entries)] == ["a/b/"]
    with pytest.raises(ConfigError):
        group_folders("", 0, entries)
