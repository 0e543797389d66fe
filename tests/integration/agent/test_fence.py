"""Lease fencing on real containers: the guard freezes them when the lease lapses, with no help from the agent.

The "agent" here is this test process, which never calls ``Fence.check``: the
guard, a process of its own, does the freezing, as it must when the real agent
is hung or dead. Only a confirmed renewal thaws, and a container named stale
dies at the thaw without running another step.
"""

from __future__ import annotations

import subprocess
import sys
import time

from counter_support import COUNTER, count, counter_app
from helpers import assert_eventually
from torpor.agent._fence import Fence, Freezer, now



def _stays(agent, run_id: str, seconds: float) -> int:  # type: ignore[no-untyped-def]
    """The count, after checking it does not move for ``seconds``."""
    before = count(agent, run_id)
    time.sleep(seconds)  # a frozen process must not count on: watch it for a while
    assert count(agent, run_id) == before, "a frozen container went on running"
    return before


def test_the_guard_freezes_a_lapsed_lease_and_only_a_renewal_thaws(make_agent, file_store, state_dir):
    agent = make_agent(file_store, "fence")
    fence = Fence(agent.mgr.state, Freezer(agent.mgr.cgroup_parent))
    c = agent.start(run_id="run-f", args=COUNTER, app_dir=counter_app(state_dir))
    try:
        assert (fence.freezer.path / c.id).is_dir(), "the container is not under the agent's cgroup"
        assert_eventually(lambda: count(agent, "run-f") > 3, timeout=30)

        fence.start()  # no lease yet: the guard freezes everything at once
        fence.fence_seconds = 2.0
        assert_eventually(fence.freezer.frozen, timeout=5, msg="the guard did not freeze an expired lease")
        _stays(agent, "run-f", 0.5)

        fence.renewed(now(), kill_stale=lambda: None)
        assert not fence.freezer.frozen()
        before = count(agent, "run-f")
        assert_eventually(lambda: count(agent, "run-f") > before + 3, timeout=10, msg="not thawed")

        # No renewal for fence_seconds: the guard alone freezes it again, while this "agent" does nothing.
        lapsed = time.monotonic()
        assert_eventually(fence.freezer.frozen, timeout=10, interval=0.02, msg="the lapsed lease was not fenced")
        assert time.monotonic() - lapsed >= 1.0, "frozen long before the lease lapsed"
        last = _stays(agent, "run-f", 0.5)

        # A late confirmation of a renewal sent before the lapse does not thaw.
        fence.renewed(now() - 5.0, kill_stale=lambda: None)
        assert fence.freezer.frozen()

        # A renewal that names this run stale: killed first, thawed after; it never counts again.
        fence.renewed(now(), kill_stale=lambda: agent.runc.kill(c.id, "KILL", every_process=True))
        assert c.wait(timeout=10) != 0
        assert count(agent, "run-f") == last, "the stale copy ran again after the thaw"
    finally:
        fence.stop_guard()
        agent.close()
        fence.freezer.remove()


def test_the_guard_leaves_once_its_agent_is_gone_and_no_container_is_left(make_agent, file_store, state_dir):
    agent = make_agent(file_store, "gone")
    freezer = Freezer(agent.mgr.cgroup_parent)
    freezer.ensure()
    fake_agent = subprocess.Popen(["sleep", "600"])
    guard = subprocess.Popen([sys.executable, "-m", "torpor.agent._fence", "--state-dir", str(agent.mgr.state),
                              "--cgroup", freezer.relative, "--agent-pid", str(fake_agent.pid)])
    try:
        assert_eventually(freezer.frozen, timeout=5)  # no lease file: frozen
        time.sleep(0.3)  # it must keep guarding while its agent lives
        assert guard.poll() is None
        fake_agent.kill()
        fake_agent.wait()
        assert guard.wait(timeout=5) == 0
    finally:
        for p in (guard, fake_agent):
            if p.poll() is None:
                p.kill()
                p.wait()
        freezer.thaw()
        freezer.remove()
