"""A task whose parameter is a dataclass: good payloads arrive converted, bad ones fail the trigger call."""

from __future__ import annotations

import json

from e2e_support import trigger, wait_status

DONE = {"COMPLETED", "FAILED", "CRASHED"}


def _count(stack) -> int:
    return len(stack.cli_json("runs", "list", "--task", "typed-order"))


def test_a_good_payload_arrives_as_the_dataclass(stack):
    good = {"owner": "ada", "items": [{"name": "a"}, {"name": "b", "count": 2}]}
    run = wait_status(stack, trigger(stack, "typed-order", good), DONE)
    assert run["status"] == "COMPLETED" and run["output"] == {"type": "Basket", "owner": "ada", "units": 3}, run


def test_a_bad_payload_fails_the_trigger_call_and_creates_no_run(stack):
    before = _count(stack)
    bad = {"owner": "ada", "items": [{"name": "a", "count": "two"}]}
    proc = stack.cli("trigger", "typed-order", "--payload", json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "payload.items[0].count: 'two' is not of type 'integer'" in proc.stderr + proc.stdout, proc
    assert _count(stack) == before


def test_a_bad_payload_from_inside_a_run_raises_there_with_the_reason(stack):
    run = wait_status(stack, trigger(stack, "typed-parent", {"order": {"owner": 5, "items": []}}), DONE)
    assert run["status"] == "COMPLETED", run
    assert "payload.owner: 5 is not of type 'string'" in run["output"]["error"], run["output"]
