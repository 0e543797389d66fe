"""A run suspended on one agent resumes on the other when the first has no free slot."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually


@pytest.fixture(scope="module")
def two() -> Iterator[Stack]:
    yield from make_stack(2, "--slots", "1", "--suspend-threshold", "3")


def events(stack: Stack, run_id: str) -> list[dict]:
    return stack.cli_json("runs", "show", run_id)["events"]


def test_resumes_on_the_other_agent_when_the_first_is_full(two):
    a = trigger(two, "big-state", {"mb": 20, "seconds": 6})
    wait_status(two, a, {"SUSPENDED"}, timeout=60)
    first = next(e["agent"] for e in events(two, a) if e["type"] == "started")
    # Fill both agents (one slot each) with long runs.
    fillers = [trigger(two, "busy", {"seconds": 300}) for _ in range(2)]
    for f in fillers:
        wait_status(two, f, {"RUNNING"}, timeout=60)
    # `a`'s wait ends while no agent has a free slot: it waits for one, it is not lost.
    assert_eventually(lambda: any(e["type"] == "restore_queued" for e in events(two, a)), timeout=30)
    time.sleep(1.0)
    assert two.cli_json("runs", "show", a)["status"] not in ("RUNNING", "COMPLETED")
    # Free the slot of the *other* agent: `a` must resume there.
    on_other = next(f for f in fillers if two.cli_json("runs", "show", f)["agent"] != first)
    other = two.cli_json("runs", "show", on_other)["agent"]
    two.cli("runs", "cancel", on_other)
    done = wait_status(two, a, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED" and done["output"]["before"] == done["output"]["after"], done
    restored = [e for e in done["events"] if e["type"] == "restored"]
    assert restored and restored[-1]["agent"] == other != first, done["events"]
    for f in fillers:
        two.cli("runs", "cancel", f, check=False)
