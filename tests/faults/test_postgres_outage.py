"""Scenario 4: Postgres frozen (SIGSTOP of every Postgres process), or restarted, for twice the lease.

At that moment runs are in each state: one RUNNING, one SUSPENDING (its dump
held by a fault point), one SUSPENDED, one RESTORING (its restore held by a
fault point). An outage of the database delays work but kills nothing: every
run completes, no host failure or attempt is spent, no host is declared lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness_checker import Checker, Expect
from harness_stack import Stack, status_name
from helpers import assert_eventually

HOLD = 3  # seconds a dump or restore on a1 waits at its fault point: long enough to be caught in that state


def _runs_in_every_state(stack: Stack) -> list[Expect]:
    """Four runs on a1: RUNNING, SUSPENDING, SUSPENDED and RESTORING at once."""
    a1 = stack.restart_agent("a1", faults=f"agent.before_dump=sleep:{HOLD},agent.before_restore=sleep:{HOLD}")
    running = stack.trigger("counter", steps=50, pause=0.15)
    suspended = stack.trigger("long-wait", steps=4, wait=9, wait_after=2)
    restoring = stack.trigger("long-wait", steps=4, wait=2.2, wait_after=2)
    # restoring's wait ends during its (held) dump: it is restored as soon as the dump is recorded.
    stack.wait_run(restoring, lambda r: status_name(r) == "RESTORING" and r.agent == "a1", "to be restoring on a1",
                   timeout=30)
    suspending = stack.trigger("long-wait", steps=4, wait=3, wait_after=1)
    want = {running: "RUNNING", suspending: "SUSPENDING", suspended: "SUSPENDED", restoring: "RESTORING"}

    def all_there() -> bool:
        return all(status_name(stack.run(r)) == s for r, s in want.items())
    try:
        assert_eventually(all_there, timeout=20, interval=0.05)
    except AssertionError:
        raise AssertionError(f"runs not in every state at once (wanted, is): "
                             f"{[(s, status_name(stack.run(r))) for r, s in want.items()]}") from None
    assert a1.alive
    return [Expect(running, "counter", 50, periodic=1.0), Expect(suspending, "long-wait", 4),
            Expect(suspended, "long-wait", 4), Expect(restoring, "long-wait", 4)]


def _outage(stack: Stack, checker: Checker, down: Callable[[], None], up: Callable[[], None]) -> None:
    expects = _runs_in_every_state(stack)
    down()
    try:
        time.sleep(2 * stack.lease)  # the outage itself: its length is the fault, nothing waits on a race
    finally:
        up()
    checker.verify(expects)
    agents = {a.name: a for a in stack.client().list_agents()}
    assert all(agents[n].alive for n in stack.agents), agents


def test_postgres_frozen(stack: Stack, checker: Checker) -> None:
    _outage(stack, checker, stack.postgres.freeze, stack.postgres.thaw)


def test_postgres_restarted(stack: Stack, checker: Checker) -> None:
    _outage(stack, checker, stack.postgres.crash, stack.postgres.start)
