"""An agent that starts kills the containers an earlier instance left behind."""

from __future__ import annotations

from pathlib import Path

from helpers import assert_eventually
from torpor.agent import AgentConfig, ContainerManager, Runc, find_criu
from torpor.agent._daemon import Agent, DaemonConfig


def _agent(state: Path, store) -> Agent:
    return Agent(DaemonConfig(name="orphan-test", coordinator="127.0.0.1:1", join_token="x"),
                 containers=AgentConfig(state_dir=state / "agent"), runc=Runc(root=state / "runc", criu=find_criu()),
                 store=store)


def test_restarted_agent_reaps_leftover_containers(make_agent, file_store, state_dir):
    make_agent(file_store)  # skips/fails with the reason when runc or CRIU are missing
    # The earlier instance's container layer (an agent's whole daemon would have no coordinator to renew its
    # lease with, and its guard would freeze the container while it starts).
    first = ContainerManager(AgentConfig(state_dir=state_dir / "agent"), runc=Runc(root=state_dir / "runc", criu=find_criu()),
                             store=file_store, keys=None)
    c = first.start(run_id="run-orphan", args=["/usr/bin/python3", "-c", "import time; time.sleep(600)"])
    assert [s.id for s in first.runc.list()] == [c.id]
    # The first agent process "dies" without stopping its container; a new one starts.
    second = _agent(state_dir, file_store)
    assert second.mgr.runc.list() == []
    assert_eventually(lambda: not c.running, timeout=10)
    assert not any((state_dir / "agent" / "containers").iterdir())
