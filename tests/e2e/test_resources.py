"""Memory as a resource, through `torpor dev` with two agents offering 2 GiB and 8 GiB.

A task promised 3 GiB goes only to the agent with room for it, and waits (with
the reason in `runs show`) when the room is taken; a task that goes over its
limit ends OUT_OF_MEMORY, once, not as a crash of its host.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually

DONE = {"COMPLETED", "FAILED", "CRASHED", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def sized() -> Iterator[Stack]:
    yield from make_stack(2, "--slots", "3", "--agent-memory", "2GiB,8GiB")


def test_a_3_gib_task_goes_only_to_the_agent_with_room(sized):
    agents = {a["name"]: a for a in sized.cli_json("agents", "list")}
    assert sorted(agents) == ["dev-agent-1", "dev-agent-2"], agents
    runs = [trigger(sized, "big-mem", {"seconds": 8}) for _ in range(3)]
    # 8 GiB hold two runs of 3 GiB; the third waits, though dev-agent-1 has three free slots.
    placed = assert_eventually(
        lambda: [r for r in (sized.cli_json("runs", "show", r) for r in runs) if r["agent"]] if sum(
            1 for r in runs if sized.cli_json("runs", "show", r)["agent"]) == 2 else None, timeout=60)
    assert {r["agent"] for r in placed} == {"dev-agent-2"}, placed
    waiting = next(r for r in runs if r not in {p["id"] for p in placed})

    def unplaced() -> str:
        run = sized.cli_json("runs", "show", waiting)
        assert run["status"] == "QUEUED" and run["unplaced"], run
        return run["unplaced"]

    assert "needs 3 GiB of memory" in assert_eventually(unplaced, timeout=30)
    assert "unplaced needs 3 GiB" in sized.cli("runs", "show", waiting).stdout
    for run_id in runs:
        done = wait_status(sized, run_id, DONE, timeout=120)
        assert done["status"] == "COMPLETED" and done["agent"] == "dev-agent-2", done


def test_a_task_over_its_memory_limit_ends_out_of_memory(sized):
    run = wait_status(sized, trigger(sized, "mem-hog", {"mb": 256}), DONE, timeout=120)
    assert run["status"] == "OUT_OF_MEMORY", run
    assert run["attempt"] == 1 and "more memory than its limit (64 MiB)" in run["error"], run
    assert [a["status"] for a in run["attempts"]] == ["OUT_OF_MEMORY"], run["attempts"]
    # Its agent is not blamed: both agents keep their leases and take the next run.
    assert all(a["alive"] for a in sized.cli_json("agents", "list"))
