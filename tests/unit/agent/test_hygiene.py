"""The agent's disk hygiene, on real directories: leftovers at start, logs per run, the bundle cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torpor.agent._hygiene import drop_run_logs, gc_bundles, reap_scratch, touch_bundle


def _tree(root: Path, *files: str) -> None:
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")


def test_start_removes_every_leftover_of_an_earlier_process_and_keeps_the_rest(tmp_path):
    state, images = tmp_path / "state", tmp_path / "images"
    current = state / "runtime" / "fp-now"
    _tree(state, "runtime/fp-now/torpor/__init__.py", "runtime/fp-old/torpor/__init__.py", "runtime/.rt.half/x",
          "criu/torpor.conf", "criu/run_1.abc.work/dump.log", "logs/run_1/stdout.log", "bundles/v1/tasks.py",
          "bundles/.v2.partial/tasks.py")
    _tree(images, "run_1.abc-ck1/pages-1.img", "run_2.def-restore/core-1.img")
    os.chmod(state / "bundles" / ".v2.partial", 0o555)  # made read-only mid-fetch, as fetch does
    removed = reap_scratch(state, images, current)
    assert sorted(p.name for p in removed) == sorted([".rt.half", "fp-old", "run_1.abc.work", "run_1",
                                                      ".v2.partial", "run_1.abc-ck1", "run_2.def-restore"])
    assert list(images.iterdir()) == []
    assert (current / "torpor" / "__init__.py").exists() and (state / "criu" / "torpor.conf").exists()
    assert (state / "bundles" / "v1" / "tasks.py").exists()  # bundles are a cache, aged out by gc_bundles


def test_a_run_leaving_takes_its_log_files_and_keeps_a_failed_dump_log(tmp_path):
    _tree(tmp_path, "logs/run_a/stdout.log", "logs/run_a/stderr.log", "logs/run_b/stdout.log",
          "logs/run_b/criu-dump-ck.log")
    drop_run_logs(tmp_path, "run_a")
    drop_run_logs(tmp_path, "run_b")
    drop_run_logs(tmp_path, "run_never_here")
    assert not (tmp_path / "logs" / "run_a").exists()
    assert sorted(p.name for p in (tmp_path / "logs" / "run_b").iterdir()) == ["criu-dump-ck.log"]


def test_bundles_unused_for_their_ttl_go_unless_a_run_here_uses_them(tmp_path):
    now = time.time()
    for version, age in (("old", 7200), ("old-in-use", 7200), ("recent", 60), (".partial", 7200)):
        _tree(tmp_path, f"{version}/tasks.py")
        os.chmod(tmp_path / version / "tasks.py", 0o444)
        os.chmod(tmp_path / version, 0o555)
        os.utime(tmp_path / version, (now - age, now - age))
    assert gc_bundles(tmp_path, {"old-in-use"}, max_age=3600, now=now) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial", "old-in-use", "recent"]
    touch_bundle(tmp_path / "old-in-use")  # used again: young again
    assert gc_bundles(tmp_path, set(), max_age=3600, now=time.time()) == []
