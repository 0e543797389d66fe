"""A hostile task's grab for processes and disk, with real runc and cgroups.

A fork bomb stops at the run's pids limit: the bomb itself goes on, another
run keeps counting and can start processes, a new run starts, the agent still
checkpoints and kills. Filling /workspace, /tmp and /dev/shm stops with
ENOSPC at each tmpfs's size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from counter_support import COUNTER, count
from helpers import assert_eventually, need
from hostile_support import HOG, HOSTILE, WORK, hostile_app, reports
from torpor.agent import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def app(state_dir: Path) -> Path:
    return hostile_app(state_dir)


def pids_cgroup(agent, container) -> Path:  # type: ignore[no-untyped-def]
    """The container's cgroup directory holding its pids controller (cgroup v2, or v1's pids hierarchy)."""
    relative = f"{agent.mgr.cgroup_parent}/{container.id}"
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    path = CGROUP_ROOT / relative if v2 else CGROUP_ROOT / "pids" / relative
    need((path / "pids.max").exists(), f"no pids controller at {path}")
    return path


def beats(agent, run_id: str) -> int:  # type: ignore[no-untyped-def]
    lines = [ln for ln in agent.mgr.run_log(run_id, "stdout").read_text().splitlines() if ln.startswith("beat ")]
    return int(lines[-1].split()[1]) if lines else 0


def test_fork_bomb_stops_at_the_pids_limit(make_agent, file_store, app):
    agent = make_agent(file_store)
    bystander = agent.start(run_id="run-bystander", args=COUNTER, app_dir=app)
    bomb = agent.start(run_id="run-bomb", args=HOG, app_dir=app, env={"HOG": "bomb"}, limits=Limits(pids=64))
    [result] = assert_eventually(lambda: reports(agent, "run-bomb"), timeout=60)
    assert result["errno"] == "EAGAIN"  # fork refused by the pids controller
    cgroup = pids_cgroup(agent, bomb)
    assert (cgroup / "pids.max").read_text().strip() == "64"
    events = dict(ln.split() for ln in (cgroup / "pids.events").read_text().splitlines())
    assert int(events["max"]) > 0  # forks were refused at the limit...
    assert int((cgroup / "pids.current").read_text()) <= 64  # ...and it never went past it

    # The bomb goes on (printing needs no new process).
    at_limit = beats(agent, "run-bomb")
    assert_eventually(lambda: beats(agent, "run-bomb") > at_limit + 5, timeout=30)
    # Another run is unaffected: it keeps counting, and a run started now forks, spawns and threads.
    counted = count(agent, "run-bystander")
    assert_eventually(lambda: count(agent, "run-bystander") > counted + 5, timeout=30)
    newcomer = agent.start(run_id="run-newcomer", args=HOSTILE, app_dir=app, env={"ROUNDS": "1"})
    assert newcomer.wait(timeout=120) == 0, agent.mgr.run_log("run-newcomer", "stderr").read_text()
    assert reports(agent, "run-newcomer")[0]["work"] == WORK
    # The agent is unharmed: it checkpoints the bystander and kills the bomb, all of it.
    manifest = agent.mgr.checkpoint(bystander, kind="periodic", leave_running=True)
    assert file_store.exists(manifest.key) and bystander.running
    assert agent.mgr.kill(bomb) == 137
    assert not cgroup.exists()
    assert bystander.running


def _tmpfs_sizes(bundle: Path) -> dict[str, int]:
    """Each tmpfs mount's size limit in bytes, as the container's config.json gives it."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    sizes = {}
    for mount in json.loads((bundle / "config.json").read_text())["mounts"]:
        for opt in mount["options"]:
            m = re.fullmatch(r"size=(\d+)([kmg]?)", opt)
            if mount["type"] == "tmpfs" and m:
                sizes[mount["destination"]] = int(m.group(1)) * units[m.group(2)]
    return sizes


def test_filling_tmpfs_stops_at_its_size(make_agent, file_store, app):
    agent = make_agent(file_store)
    dirs = ["/workspace", "/tmp", "/dev/shm"]
    c = agent.start(run_id="run-fill", args=HOG, app_dir=app, env={"HOG": "fill", "FILL": ",".join(dirs)})
    sizes = _tmpfs_sizes(c.bundle)
    assert c.wait(timeout=300) == 0, agent.mgr.run_log("run-fill", "stderr").read_text()
    [result] = reports(agent, "run-fill")
    for d in dirs:
        got = result[d]
        assert got["errno"] == "ENOSPC", (d, got)
        # Everything up to the size was written (less than one 1 MiB chunk short), nothing past it.
        assert sizes[d] - (1 << 20) < got["written"] <= sizes[d], (d, got, sizes[d])
        assert got["after"] == "still writable\n"  # freed, the task goes on using it
    assert sizes["/workspace"] == 1 << 30 and sizes["/tmp"] == 256 << 20  # what docs/security.md says
