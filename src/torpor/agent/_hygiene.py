"""The agent's disk: what it removes, and when, so a host that runs for a year does not fill up.

- At start, nothing of an earlier agent process is live (its containers were
  just killed), so every piece of per-run scratch goes: CRIU image
  directories and work directories left by a crash mid-dump or mid-restore
  (each as large as a run's memory), run logs, half-made bundle and runtime
  copies, and runtime copies of other torpor versions.
- When a run leaves this agent, its log files go (their contents were sent
  to the coordinator as they were written). A CRIU log kept from a failed
  dump stays until the next start; it is also in the store.
- Deployment bundles are a cache: one not used by a run here for
  ``bundle_ttl`` seconds is removed (and fetched again if ever needed).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)


def remove_tree(path: Path) -> None:
    """Remove ``path`` even where it was made read-only (bundles are 0555/0444)."""
    if path.is_dir() and not path.is_symlink():
        for dirpath, _, _ in os.walk(path):
            try:
                os.chmod(dirpath, 0o755)
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def reap_scratch(state: Path, images: Path, runtime_current: Path) -> list[Path]:
    """At agent start: remove what an earlier agent process left behind. Returns what was removed."""
    removed: list[Path] = []
    candidates = [*images.glob("*"), *(state / "criu").glob("*.work"), *(state / "logs").glob("*"),
                  *(state / "bundles").glob(".*"), *(runtime_current.parent.glob("*"))]
    for p in candidates:
        if p == runtime_current:
            continue
        remove_tree(p)
        removed.append(p)
    if removed:
        log.info("removed %d leftover(s) of an earlier agent process: %s", len(removed),
                 ", ".join(p.name for p in removed[:10]) + (" ..." if len(removed) > 10 else ""))
    return removed


def drop_run_logs(state: Path, run_id: str) -> None:
    """A run left this agent: its stdout/stderr files are no longer needed here."""
    d = state / "logs" / run_id
    for name in ("stdout.log", "stderr.log"):
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
    try:
        d.rmdir()  # kept while it still holds a failed dump's CRIU log
    except OSError:
        pass


def make_read_only(tree: Path) -> None:
    """Files 0444 (0555 if executable) and directories 0555 under ``tree``: what every run may read, none write."""
    for dirpath, _, filenames in os.walk(tree, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, 0o555 if os.stat(p).st_mode & 0o111 else 0o444)
        os.chmod(dirpath, 0o555)


def touch_bundle(path: Path) -> None:
    """Mark a cached bundle as used now (its mtime is its last use)."""
    try:
        os.utime(path)
    except OSError:
        pass


def gc_bundles(bundles: Path, in_use: set[str], max_age: float, now: float | None = None) -> list[str]:
    """Remove cached bundles not used by a run here for ``max_age`` seconds; returns their versions."""
    now = time.time() if now is None else now
    removed = []
    for p in bundles.iterdir() if bundles.is_dir() else ():
        if p.name.startswith(".") or p.name in in_use:
            continue
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > max_age:
            remove_tree(p)
            removed.append(p.name)
    if removed:
        log.info("removed %d bundle(s) unused for %.0fs: %s", len(removed), max_age, ", ".join(removed))
    return removed
