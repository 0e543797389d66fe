"""The counter container the agent-layer tests watch: an app directory holding counter_task.py, and its count."""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
COUNTER = ["/usr/bin/python3", "/app/counter_task.py"]
"""The container command that runs it."""


def app_with(state_dir: Path, *names: str) -> Path:
    """``state_dir/app`` holding these files of this directory, readable by the task's user."""
    app = state_dir / "app"
    app.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(HERE / name, app / name)
    app.chmod(0o755)
    return app


def counter_app(state_dir: Path) -> Path:
    """``state_dir/app`` with counter_task.py."""
    return app_with(state_dir, "counter_task.py")


def count(agent, run_id: str) -> int:  # type: ignore[no-untyped-def]
    """The last number the counter of ``run_id`` printed (0 before the first)."""
    lines = [ln for ln in agent.mgr.run_log(run_id, "stdout").read_text().splitlines() if ln.startswith("count ")]
    return int(lines[-1].split()[1]) if lines else 0
