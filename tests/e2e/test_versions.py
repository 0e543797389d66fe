"""Runs keep the deployment version they were triggered on; bad return values fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

from e2e_support import trigger, wait_status

PROJECT = Path(__file__).resolve().parent / "project"

PINNED = '''
import time
from torpor import Retry, context, task

MARK = "{mark}"

@task(id="pinned", retry=Retry(max_attempts=2, min_timeout=0.2, max_timeout=0.2, randomize=False))
def pinned(payload):
    if context().attempt == 1:
        time.sleep(payload.get("sleep", 3))
        raise RuntimeError("first attempt fails after a while")
    return {{"mark": MARK, "attempt": context().attempt, "version": context().version}}
'''


def test_retries_keep_the_version_they_started_on(stack, tmp_path):
    proj = tmp_path / "versions"
    proj.mkdir()
    (proj / "torpor.toml").write_text('project = "versions"\nmodules = ["pinned_tasks"]\n')
    (proj / "pinned_tasks.py").write_text(PINNED.format(mark="one"))
    v1 = stack.cli_json("deploy", str(proj))["version"]
    run_id = trigger(stack, "pinned", {"sleep": 3})
    (proj / "pinned_tasks.py").write_text(PINNED.format(mark="two"))
    v2 = stack.cli_json("deploy", str(proj))["version"]
    assert v1 != v2
    done = wait_status(stack, run_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert done["status"] == "COMPLETED" and done["version"] == v1
    assert done["output"] == {"mark": "one", "attempt": 2, "version": v1}
    fresh = wait_status(stack, trigger(stack, "pinned", {"sleep": 0}), {"COMPLETED", "FAILED"}, timeout=90)
    assert fresh["output"]["mark"] == "two" and fresh["version"] == v2
    shutil.rmtree(proj)


def test_a_return_value_that_is_not_json_fails_with_a_clear_error(stack):
    done = wait_status(stack, trigger(stack, "bad-return", {}), {"COMPLETED", "FAILED"}, timeout=60)
    assert done["status"] == "FAILED"
    assert "not JSON-serialisable" in done["error"] and "set" in done["error"], done["error"]
