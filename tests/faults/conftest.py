"""The fault stack shared by every scenario of this directory, and the clean-up around it.

One stack (network, Postgres, MinIO, a coordinator, three agent hosts) serves
all the scenarios: starting it costs a few seconds, the scenarios run inside
a budget of minutes. After each test ``repair()`` undoes whatever the test
left (a frozen Postgres, a dead MinIO, a partition, an agent with fault
points), so one failing scenario does not spill into the next; the stack
itself is removed as soon as the last test of this directory is done, not
at the end of the whole session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.minio import minio_binary
from fixtures.postgres import PG_BIN
from harness_checker import Checker
from harness_stack import Stack
from helpers import need, need_root

HERE = Path(__file__).resolve().parent
# a1 has the most slots, so new runs go there first (the scheduler picks the agent with most free slots):
# each scenario knows where its runs start, and that they move to a2/a3 when a1 is lost.
AGENTS = {"a1": 8, "a2": 4, "a3": 4}
LEASE = 3.0

_stack: Stack | None = None


def _need_tools() -> None:
    need_root()
    for tool in ("runc", "ip", "iptables", "nsenter", "mount"):
        need(shutil.which(tool) is not None, f"the fault harness needs {tool}")
    need(Path(os.environ.get("TORPOR_TOOLS", "/opt/torpor"), "bin", "criu").exists() or shutil.which("criu") is not None,
         "needs CRIU >= 4.2 (make criu)")
    need((PG_BIN / "postgres").exists(), f"needs PostgreSQL binaries in {PG_BIN}")
    need(minio_binary() is not None, "needs MinIO (make minio)")
    need(Path("/sys/fs/cgroup/freezer").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists(),
         "needs a cgroup freezer")


def _close() -> None:
    global _stack
    stack, _stack = _stack, None
    if stack is not None:
        stack.close()


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[Stack]:
    global _stack
    _need_tools()
    _stack = Stack(lease=LEASE, heartbeat=1.0, suspend_threshold=2.0)
    try:
        _stack.start(AGENTS)
    except BaseException:
        _close()
        raise
    yield _stack
    _close()


@pytest.fixture
def stack(fault_stack: Stack) -> Iterator[Stack]:
    fault_stack.repair()
    yield fault_stack
    fault_stack.repair()


@pytest.fixture
def checker(stack: Stack) -> Checker:
    return Checker(stack)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Remove the stack once the last test of this directory is done (the rest of the suite does not need it)."""
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        _close()
