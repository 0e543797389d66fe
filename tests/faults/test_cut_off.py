"""Scenarios 2 and 3: a host is cut off for longer than the lease, then comes back.

2. its agent process hangs (SIGSTOP) while its containers are untouched;
3. its namespace is partitioned (every packet dropped on its veth, or the
   link taken down) while the agent and containers go on.

The coordinator gives the runs to other hosts after the lease. At most one
copy may run at a time: the cut-off copies must have stopped before the new
ones start (lease-guarded execution), and must never make a step again once
the host is back. The ledger is written from inside each host's namespace,
so a cut-off copy that still runs is seen. Once back, the host is given work
again.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness_checker import Checker, Expect
from harness_ledger import read
from harness_stack import Stack, status_name
from helpers import assert_eventually

from torpor._proto.v1 import common_pb2


def _cut_off(stack: Stack, checker: Checker, cut: Callable[[], None], heal: Callable[[], None]) -> None:
    counter = stack.trigger("counter", steps=45, pause=0.15)
    loop = stack.trigger("ckpt-loop", steps=30, pause=0.15)
    runs = [counter, loop]
    for r in runs:
        assert stack.wait_status(r, "RUNNING").agent == "a1"
    assert_eventually(lambda: all(any(c.kind in (common_pb2.PERIODIC, common_pb2.ON_DEMAND)
                                      for c in stack.run(r).checkpoints) for r in runs),
                      timeout=30, msg="no checkpoints yet")
    cut()
    try:
        # The lease runs out; the runs move to a2/a3 and make steps there while a1 is still cut off.
        for r in runs:
            stack.wait_run(r, lambda run: run.agent in ("a2", "a3") and status_name(run) == "RUNNING",
                           "to run on another host", timeout=40)

        def moved_on() -> bool:
            steps = [s for s in read(stack.ledger_files()) if s.host != "a1"]
            return all(sum(s.run == r for s in steps) >= 3 for r in runs)
        assert_eventually(moved_on, timeout=30, msg="the restored copies made no progress")
    finally:
        heal()
    failures = []
    try:
        checker.verify([Expect(counter, "counter", 45, host_lost=True, periodic=1.0),
                        Expect(loop, "ckpt-loop", 30, host_lost=True)])
    except AssertionError as exc:
        failures.append(str(exc))
    try:  # back on the network, a1 is given work again (it has the most free slots)
        probes = stack.given_work("a1", timeout=3 * stack.lease)
        checker.verify([Expect(p, "counter", 1) for p in probes])
    except AssertionError as exc:
        failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


def test_hung_agent(stack: Stack, checker: Checker) -> None:
    a1 = stack.agents["a1"]
    _cut_off(stack, checker, a1.pause, a1.resume)


@pytest.mark.parametrize("kind", ["drop", "link-down"])
def test_partitioned_host(stack: Stack, checker: Checker, kind: str) -> None:
    host = stack.agents["a1"].host
    if kind == "drop":
        _cut_off(stack, checker, lambda: stack.net.partition(host), lambda: stack.net.heal(host))
    else:
        _cut_off(stack, checker, lambda: stack.net.link_down(host), lambda: stack.net.link_up(host))
