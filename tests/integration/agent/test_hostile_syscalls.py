"""A hostile task's syscalls against the seccomp profile, with real runc and CRIU.

Each attempt is refused (EPERM; ENOSYS for clone3) and the task goes on doing
ordinary work: threads, subprocess, fork, asyncio, sockets. CRIU saves the
filter with the task and puts it back on restore: after a restore on another
agent the same attempts are still refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from counter_support import COUNTER, count
from helpers import assert_eventually
from hostile_support import HOSTILE, REFUSED, WORK, hostile_app, reports


@pytest.fixture
def app(state_dir: Path) -> Path:
    return hostile_app(state_dir)


def test_refused_syscalls_and_the_task_goes_on(make_agent, file_store, app):
    agent = make_agent(file_store)
    other = agent.start(run_id="run-other", args=COUNTER, app_dir=app)
    assert_eventually(lambda: count(agent, "run-other") > 0, timeout=30)
    hostile = agent.start(run_id="run-hostile", args=HOSTILE, app_dir=app,
                          env={"ROUNDS": "1", "TARGET_PID": str(other.pid)})
    code = hostile.wait(timeout=120)
    err = agent.mgr.run_log("run-hostile", "stderr").read_text()
    assert code == 0, err
    [report] = reports(agent, "run-hostile")
    assert report["seccomp"] == "2"  # filter mode
    assert report["refused"] == REFUSED
    assert report["work"] == WORK
    assert agent.mgr.run_log("run-hostile", "stdout").read_text().rstrip().endswith("done")
    # The other run never noticed.
    at_end = count(agent, "run-other")
    assert_eventually(lambda: count(agent, "run-other") > at_end + 5, timeout=30)
    assert other.running


def test_filter_survives_checkpoint_and_restore_elsewhere(make_agent, file_store, app):
    a1 = make_agent(file_store, "host-a")
    a2 = make_agent(file_store, "host-b")
    c = a1.start(run_id="run-hostile-cr", args=HOSTILE, app_dir=app, env={"ROUNDS": "0"})
    before = assert_eventually(lambda: reports(a1, "run-hostile-cr"), timeout=60)[-1]
    assert before["refused"] == REFUSED and before["work"] == WORK, before

    manifest = a1.mgr.checkpoint(c, kind="suspend")
    assert not c.running
    log = a2.mgr.run_log("run-hostile-cr", "stdout")
    size = log.stat().st_size if log.exists() else 0
    r = a2.restore(manifest, app_dir=app)
    # Rounds after the restore: the same process (pid, round numbers go on), the same filter.
    after = assert_eventually(lambda: reports(a2, "run-hostile-cr", size)[1:], timeout=60)[0]
    assert after["pid"] == before["pid"] and after["round"] > before["round"]
    assert after["seccomp"] == "2"
    assert after["refused"] == REFUSED
    assert after["work"] == WORK  # new threads, processes and sockets after the restore
    assert r.running
