"""A snapshot taken by an agent from before environments (/deps) restores on today's agent.

Environments added a mount point to every container's root and a /deps bind
to the containers of deployments with dependencies. A run suspended before an
upgrade has neither; CRIU must find, on the upgraded agent, the mount set it
was dumped with. So: the agent's code as of the commit before environments
(taken from this repository's history) starts and suspends a run in a process
of its own; this checkout's agent restores it, and the process goes on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import assert_eventually, need

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
BEFORE_ENVIRONMENTS = "9f1f4ae"  # the last commit whose agent knew nothing of environments

_OLD_AGENT = r"""
import json, sys, time
from pathlib import Path
from torpor.agent import AgentConfig, ContainerManager, Kek, Keyring, Runc, find_criu
from torpor.agent._fence import Freezer
from torpor.store import open_store

state, store_url, app, key_hex = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
runc = Runc(root=state / "runc-old", criu=find_criu())
mgr = ContainerManager(AgentConfig(state_dir=state / "old"), runc=runc, store=open_store(store_url),
                       keys=Keyring(Kek(bytes.fromhex(key_hex))))
try:
    c = mgr.start(run_id="run-old", args=["/usr/bin/python3", "/app/counter_task.py"], app_dir=app)
    log = mgr.run_log("run-old", "stdout")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and log.read_text().count("count ") < 5:
        time.sleep(0.1)
    manifest = mgr.checkpoint(c, kind="suspend", deployment_version="v-old")
    counted = max(int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("count "))
    print(json.dumps({"key": manifest.key, "counted": counted}))
finally:
    for st in runc.list():
        runc.delete(st.id)
    mgr.nets.release_all()
    Freezer(mgr.cgroup_parent).remove()
"""


@pytest.fixture
def old_src(state_dir: Path) -> Path:
    """``src/`` as of BEFORE_ENVIRONMENTS, from git (skipped where there is no history)."""
    need(shutil.which("git") is not None and (ROOT / ".git").exists(), "needs a git checkout with its history")
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE_ENVIRONMENTS, "src"],
                          capture_output=True, timeout=120)
    need(proc.returncode == 0, f"commit {BEFORE_ENVIRONMENTS} is not in this clone's history (a shallow clone?)")
    dest = state_dir / "before"
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def test_a_snapshot_from_an_agent_before_environments_restores_and_goes_on(make_agent, file_store, state_dir,
                                                                          old_src):
    probe = make_agent(file_store, "probe")  # skips, saying why, where runc or CRIU is missing
    app = state_dir / "app"
    app.mkdir()
    shutil.copy(HERE / "counter_task.py", app / "counter_task.py")
    app.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(old_src)}
    old = subprocess.run([sys.executable, "-c", _OLD_AGENT, str(state_dir), file_store.url, str(app),
                          probe.mgr.keys.current.key.hex()], capture_output=True, text=True, timeout=300,
                         env=env, cwd=state_dir)
    assert old.returncode == 0, old.stderr[-3000:]
    made = json.loads(old.stdout.strip().splitlines()[-1])

    new = make_agent(file_store, "today")
    r = new.restore(made["key"], app_dir=app)
    log = new.mgr.run_log("run-old", "stdout")

    def counts() -> list[int]:
        return [int(x.split()[1]) for x in log.read_text().splitlines() if x.startswith("count ")] if log.exists() else []

    assert_eventually(lambda: len(counts()) > 5, timeout=30)
    assert r.running and min(counts()) > made["counted"] - 1, "it went on from the snapshot, not from 1"
    config = json.loads((r.bundle / "config.json").read_text())
    assert all(m["destination"] != "/deps" for m in config["mounts"]), "a run without dependencies gets no /deps"
