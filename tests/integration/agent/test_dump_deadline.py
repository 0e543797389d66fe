"""A CRIU that hangs mid-dump or mid-restore is killed at the deadline; the container a dump froze runs on.

The hang is made real and put at a fixed step: the CRIU that runc starts stops
itself (SIGSTOP) there (hung_criu.py), after the image is written while the
container is still frozen for a dump, before anything is restored for a restore.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import psutil

from counter_support import COUNTER, count, counter_app
from helpers import assert_eventually
from hung_criu import hang_criu_at
from torpor._errors import ContainerError


def test_a_hung_dump_is_killed_at_its_deadline_and_the_container_thawed(make_agent, file_store, state_dir):
    app = counter_app(state_dir)
    agent = make_agent(file_store, "hang")
    agent.mgr.config = dataclasses.replace(agent.mgr.config, dump_timeout=3.0)
    c = agent.start(run_id="run-hang", args=COUNTER, app_dir=app)
    assert_eventually(lambda: count(agent, "run-hang") > 5, timeout=30)
    real_criu = agent.runc.criu
    hung = hang_criu_at(agent.runc, "post-dump", state_dir / "hung-criu")

    outcome: dict[str, BaseException | None] = {}

    def dump() -> None:
        try:
            agent.mgr.checkpoint(c, checkpoint_id="ck-hang", kind="periodic", leave_running=True)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    started = time.monotonic()
    t = threading.Thread(target=dump)
    t.start()
    criu = assert_eventually(hung.process, timeout=30, interval=0.01, msg="CRIU never reached post-dump")
    frozen_at = count(agent, "run-hang")
    t.join(timeout=60)
    assert not t.is_alive(), "the dump never gave up"
    error = outcome["error"]
    assert isinstance(error, ContainerError) and "did not finish within 3s" in str(error), error
    assert time.monotonic() - started < 30
    assert_eventually(lambda: not criu.is_running() or criu.status() == psutil.STATUS_ZOMBIE, timeout=10,
                      msg="the hung CRIU was left behind")
    # Thawed: the task counts on past where CRIU froze it, and nothing of the failed checkpoint reached the store.
    assert_eventually(lambda: count(agent, "run-hang") > frozen_at + 5, timeout=10)
    assert c.running and agent.runc.state(c.id).status == "running"
    assert not file_store.exists("runs/run-hang/checkpoints/ck-hang/manifest.json")
    # The container still checkpoints normally afterwards.
    agent.runc.criu = real_criu
    agent.mgr.config = dataclasses.replace(agent.mgr.config, dump_timeout=600.0)
    manifest = agent.mgr.checkpoint(c, checkpoint_id="ck-after", kind="periodic", leave_running=True)
    assert manifest.checkpoint_id == "ck-after"


def test_a_hung_restore_is_killed_at_its_deadline_with_its_criu(make_agent, file_store, state_dir):
    app = counter_app(state_dir)
    agent = make_agent(file_store, "rhang")
    c = agent.start(run_id="run-rhang", args=COUNTER, app_dir=app)
    assert_eventually(lambda: count(agent, "run-rhang") > 3, timeout=30)
    manifest = agent.mgr.checkpoint(c, checkpoint_id="ck-r", kind="periodic", leave_running=False)
    c.wait(timeout=30)
    agent.mgr.config = dataclasses.replace(agent.mgr.config, start_timeout=3.0)
    hung = hang_criu_at(agent.runc, "pre-restore", state_dir / "hung-criu")

    outcome: dict[str, BaseException | None] = {}

    def restore() -> None:
        try:
            agent.restore(manifest, app_dir=app)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    t = threading.Thread(target=restore)
    t.start()
    criu = assert_eventually(hung.process, timeout=30, interval=0.01, msg="CRIU never reached pre-restore")
    t.join(timeout=60)
    assert not t.is_alive(), "the restore never gave up"
    error = outcome["error"]
    assert isinstance(error, ContainerError) and "did not start within 3s" in str(error), error
    assert_eventually(lambda: not criu.is_running() or criu.status() == psutil.STATUS_ZOMBIE, timeout=10,
                      msg="the hung CRIU was left behind")
    assert agent.runc.list() == [], "the failed restore left a container"
