"""A hostile task deployed like any other: what it tries is refused, and the run beside it does not notice.

Through a real `torpor dev` stack. The syscall list here is the issue's; the
agent layer's tests (tests/integration/agent/test_hostile_*.py) try some thirty
more, and after a restore on another agent; tests/e2e/test_bounds.py floods
the runtime socket and prints a gigabyte; test_network_isolation.py probes the
host's services.
"""

from __future__ import annotations

import glob
import os

from e2e_support import trigger, wait_status
from helpers import assert_eventually


def test_a_hostile_task_is_refused_everything_and_its_neighbour_goes_on(stack):
    neighbour = trigger(stack, "busy", {"seconds": 25})
    wait_status(stack, neighbour, {"RUNNING"}, timeout=60)
    agent_state = stack.agent_state(stack.cli_json("runs", "show", neighbour)["agent"])
    sockets = assert_eventually(lambda: glob.glob(str(agent_state / "sockets" / "*" / "runtime.sock")) or None,
                                timeout=20, msg="the neighbour's runtime socket never appeared")
    for path in sockets:
        assert os.path.exists(path)

    run = wait_status(stack, trigger(stack, "hostile", {"sockets": sockets, "other_pid": 1}),
                      {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert run["status"] == "COMPLETED", run
    seen = run["output"]
    assert {k: v for k, v in seen["refused"].items() if v == "ALLOWED"} == {}, seen["refused"]
    # Another run's runtime socket is not in this run's file system at all.
    assert set(seen["sockets"].values()) == {"FileNotFoundError"}, seen["sockets"]
    # The fork bomb stops at the run's pids limit (512 tasks by default), with EAGAIN.
    assert seen["fork"]["refused_with"] == "BlockingIOError" and 0 < seen["fork"]["children"] < 512, seen["fork"]

    done = wait_status(stack, neighbour, {"COMPLETED", "FAILED", "CRASHED"}, timeout=60)
    assert done["status"] == "COMPLETED" and done["attempt"] == 1, done
    assert all(a["alive"] for a in stack.cli_json("agents", "list")), "an agent lost its lease"
