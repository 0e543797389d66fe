"""Fixtures for the agent's container layer: a real runc root and CRIU per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from helpers import need, need_root
from torpor._errors import ConfigError
from torpor.agent import AgentConfig, ContainerManager, Kek, Keyring, Runc, find_criu
from torpor.agent._fence import Freezer
from torpor.store import Store


def _need_parts() -> None:
    need_root()
    need(shutil.which("runc") is not None, "needs runc (Debian package 'runc'; make test installs it)")
    need(shutil.which("iptables") is not None, "needs iptables (CRIU locks the network with it)")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700, and the task's user inside its
    # user namespace must be able to traverse the agent's state directory.
    d = Path(tempfile.mkdtemp(prefix="torpor-agent-test-", dir="/var/tmp"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


SNAPSHOT_KEYS = Keyring(Kek.generate())
"""The test session's snapshot keys (a coordinator hands agents theirs; these tests have none)."""


class Agent:
    """A ContainerManager plus cleanup of every container it made, by id."""

    def __init__(self, state: Path, store: Store, name: str, keys: Keyring | None, **config: object) -> None:
        try:
            criu = find_criu()
        except ConfigError as exc:
            need(False, f"{exc}")
            raise
        self.runc = Runc(root=state / f"runc-{name}", criu=criu)
        config_ = AgentConfig(state_dir=state / name, **config)  # type: ignore[arg-type]
        self.mgr = ContainerManager(config_, runc=self.runc, store=store, keys=keys)
        self.containers = []

    def start(self, **kw):
        c = self.mgr.start(**kw)
        self.containers.append(c)
        return c

    def restore(self, manifest, **kw):
        c = self.mgr.restore(manifest, **kw)
        self.containers.append(c)
        return c

    def close(self) -> None:
        for c in self.containers:
            if c.running:
                try:
                    self.mgr.kill(c)
                except Exception:
                    c.proc.kill()
        for st in self.runc.list():
            self.runc.delete(st.id)
        self.mgr.nets.release_all()
        Freezer(self.mgr.cgroup_parent).remove()  # the agent's (now empty) cgroups


@pytest.fixture
def make_agent(state_dir: Path) -> Iterator:
    _need_parts()
    made: list[Agent] = []

    def make(store: Store, name: str = "a1", keys: Keyring | None = SNAPSHOT_KEYS, **config: object) -> Agent:
        agent = Agent(state_dir, store, name, keys, **config)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()
