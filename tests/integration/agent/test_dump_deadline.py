"""A CRIU that hangs mid-dump is killed at the deadline, and the container it froze runs on.

The hang is made real: the test stops (SIGSTOP) the CRIU process of a running
`runc checkpoint` once it has started writing pages, so the container's
processes are frozen by CRIU at that moment.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import psutil

from counter_support import COUNTER, count, counter_app
from helpers import assert_eventually
from torpor._errors import ContainerError



def _dumping_criu(runc_pid: int) -> psutil.Process | None:
    try:
        kids = psutil.Process(runc_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((k for k in kids if k.name() == "criu"), None)


def test_a_hung_dump_is_killed_at_its_deadline_and_the_container_thawed(make_agent, file_store, state_dir):
    app = counter_app(state_dir)
    agent = make_agent(file_store, "hang")
    agent.mgr.config = dataclasses.replace(agent.mgr.config, dump_timeout=3.0)
    c = agent.start(run_id="run-hang", args=COUNTER, app_dir=app)
    assert_eventually(lambda: count(agent, "run-hang") > 5, timeout=30)

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
    image_dir = agent.mgr.images / f"{c.id}-ck-hang"
    # The dump's own CRIU (not the version check): the one writing pages into the image directory.
    assert_eventually(lambda: image_dir.exists() and any(p.name.startswith("pages-") for p in image_dir.iterdir()),
                      timeout=30, interval=0.005)
    runc = next(p for p in psutil.Process().children(recursive=True) if "checkpoint" in p.cmdline() and c.id in p.cmdline())
    criu = assert_eventually(lambda: _dumping_criu(runc.pid), timeout=10, interval=0.005)
    os.kill(criu.pid, signal.SIGSTOP)
    t.join(timeout=60)
    assert not t.is_alive(), "the dump never gave up"
    error = outcome["error"]
    assert isinstance(error, ContainerError) and "did not finish within 3s" in str(error), error
    assert time.monotonic() - started < 30
    assert not criu.is_running() or criu.status() == psutil.STATUS_ZOMBIE  # killed, with runc
    # Thawed: the task counts on, and nothing of the failed checkpoint reached the store as complete.
    before = count(agent, "run-hang")
    assert_eventually(lambda: count(agent, "run-hang") > before + 5, timeout=10)
    assert c.running and agent.runc.state(c.id).status == "running"
    assert not file_store.exists("runs/run-hang/checkpoints/ck-hang/manifest.json")
    # The container still checkpoints normally afterwards.
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

    outcome: dict[str, BaseException | None] = {}

    def restore() -> None:
        try:
            agent.restore(manifest, app_dir=app)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    t = threading.Thread(target=restore)
    t.start()

    def restoring_criu() -> psutil.Process | None:
        # runc drives CRIU in RPC mode (`criu swrk`): the CRIU under the `runc restore` process.
        for p in psutil.Process().children(recursive=True):
            try:
                if "restore" in p.cmdline() and p.name() == "runc":
                    return _dumping_criu(p.pid)
            except psutil.NoSuchProcess:
                continue
        return None

    criu = assert_eventually(restoring_criu, timeout=30, interval=0.005)
    os.kill(criu.pid, signal.SIGSTOP)
    t.join(timeout=60)
    assert not t.is_alive(), "the restore never gave up"
    error = outcome["error"]
    assert isinstance(error, ContainerError) and "did not start within 3s" in str(error), error
    assert_eventually(lambda: not criu.is_running() or criu.status() == psutil.STATUS_ZOMBIE, timeout=10,
                      msg="the hung CRIU was left behind")
    assert agent.runc.list() == [], "the failed restore left a container"
