"""A run suspended on one agent resumes on the other when the first has no free slot."""

from __future__ import annotations

from typing import Iterator

import pytest

from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually


@pytest.fixture(scope="module")
def two() -> Iterator[Stack]:
    yield from make_stack(2, "--slots", "1", "--suspend-threshold", "3")


def agent_of(stack: Stack, run_id: str) -> str:
    return assert_eventually(lambda: stack.cli_json("runs", "show", run_id)["agent"], timeout=60)


def test_resumes_on_the_other_agent_when_the_first_is_full(two):
    a = trigger(two, "big-state", {"mb": 20, "seconds": 8})
    wait_status(two, a, {"RUNNING"}, timeout=60)
    first = agent_of(two, a)
    b = trigger(two, "busy", {"seconds": 25})  # the other agent is the only free one
    wait_status(two, b, {"RUNNING"}, timeout=60)
    other = agent_of(two, b)
    assert other != first
    wait_status(two, a, {"SUSPENDED"}, timeout=60)
    c = trigger(two, "busy", {"seconds": 60})  # takes the slot `a` left on the first agent
    wait_status(two, c, {"RUNNING"}, timeout=60)
    assert agent_of(two, c) == first
    # `a`'s wait ends while both agents are full; it must not get stuck, and
    # resumes on the other agent as soon as `b` frees it.
    done = wait_status(two, a, {"COMPLETED", "FAILED"}, timeout=120)
    assert done["status"] == "COMPLETED" and done["output"]["before"] == done["output"]["after"], done
    restored = [e for e in done["events"] if "restor" in e["type"]]
    assert restored and restored[-1]["agent"] == other, done["events"]
    two.cli("runs", "cancel", c)
