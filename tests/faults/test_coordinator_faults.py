"""Scenario 5: one of two coordinators killed (kill -9), and both coordinators restarted.

Both listen on one address (SO_REUSEPORT): an agent whose coordinator died
reconnects to the survivor, as behind a load balancer. Nothing is lost or
spent: every run completes on the host it was on, with no host failure.
"""

from __future__ import annotations

import signal
import time

from harness_checker import Checker, Expect
from harness_stack import Stack
from helpers import assert_eventually


def _runs(stack: Stack) -> list[Expect]:
    counter = stack.trigger("counter", steps=30, pause=0.15)
    loop = stack.trigger("ckpt-loop", steps=14, pause=0.1)
    waiter = stack.trigger("long-wait", steps=4, wait=2.5, wait_after=1)
    stack.wait_status(counter, "RUNNING")
    stack.wait_status(loop, "RUNNING")
    stack.wait_status(waiter, "SUSPENDING", "SUSPENDED")
    return [Expect(counter, "counter", 30, periodic=1.0), Expect(loop, "ckpt-loop", 14),
            Expect(waiter, "long-wait", 4)]


def test_one_of_two_coordinators_killed(stack: Stack, checker: Checker) -> None:
    assert stack.coords is not None
    stack.coords.start("c2")
    expects = _runs(stack)
    # The agents joined when c1 was alone: c1 holds their streams. It dies; they find c2 at the same address.
    holding = stack.coords.holding(stack.postgres, stack.dbname)
    assert holding.get("a1") == "c1", holding
    stack.coords.procs["c1"].kill()
    assert_eventually(lambda: stack.coords.holding(stack.postgres, stack.dbname).get("a1") == "c2", timeout=20,
                      msg="a1 did not move to the surviving coordinator")
    checker.verify(expects)
    assert all(stack.run(e.run_id).agent in ("", "a1") for e in expects)


def test_both_coordinators_restarted(stack: Stack, checker: Checker) -> None:
    assert stack.coords is not None
    stack.coords.start("c2")
    expects = _runs(stack)
    for name in ("c1", "c2"):  # a restart of both: stopped (SIGTERM) together, started again after 2 leases
        stack.coords.procs[name].signal(signal.SIGTERM)
    for name in ("c1", "c2"):
        stack.coords.procs[name].popen.wait(timeout=20)
    time.sleep(2 * stack.lease)  # the outage itself: its length is the fault
    stack.coords.start("c1")
    stack.coords.start("c2")
    checker.verify(expects)
