"""Third-party packages: resolved and built once by `torpor deploy`, shared read-only, the same on every host.

Through `torpor dev` with two agents: a numpy array of 200 MB survives a
suspension and a restore on the other agent (CRIU finds numpy's native
libraries at the same path, with the same bytes); a second deploy builds and
uploads nothing; an unresolvable dependency and a Python no agent runs fail
the deploy with a message that says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from e2e_support import Stack, make_stack, trigger, wait_status
from helpers import assert_eventually

DEPS = Path(__file__).parent / "deps_project"
DONE = {"COMPLETED", "FAILED", "CRASHED"}


@pytest.fixture(scope="module")
def two() -> Iterator[Stack]:
    yield from make_stack(2, "--slots", "1", "--suspend-threshold", "3")


def _deploy(stack: Stack, project: Path, check: bool = True):  # type: ignore[no-untyped-def]
    return stack.cli("deploy", str(project), "--json", check=check, timeout=900)


def test_a_numpy_run_moves_to_the_other_agent_with_its_array_unchanged(two):
    first = json.loads(_deploy(two, DEPS).stdout)
    env = first["environment"]
    assert env and env["python"] and any(r.startswith("numpy==") for r in env["requirements"]), first
    assert any(r.startswith("httpx==") for r in env["requirements"]), "requirements.txt is read too"
    shown = two.cli_json("deployments", "show", "--project", "deps")
    assert shown["environment"]["id"] == env["id"] and shown["environment"]["requirements"] == env["requirements"]

    from torpor.store import open_store

    store = open_store(f"file://{two.dir / 'store'}")
    held = store.list(f"environments/{env['id']}")
    again = json.loads(_deploy(two, DEPS).stdout)  # unchanged: nothing built, nothing uploaded
    assert again["environment"]["id"] == env["id"] and again["environment"]["uploaded"] is False, again
    assert len(held) == 1 and store.list("environments/") == held, "the store holds the one environment, once"
    assert again["version"] == first["version"] and again["created"] is False

    run_id = trigger(two, "np-hold", {"mb": 200})
    wait_status(two, run_id, {"SUSPENDED"}, timeout=180)
    started = next(e["agent"] for e in two.cli_json("runs", "show", run_id)["events"] if e["type"] == "started")
    fillers = [trigger(two, "busy", {"seconds": 300}) for _ in range(2)]
    for f in fillers:
        wait_status(two, f, {"RUNNING"}, timeout=60)
    on_other = next(f for f in fillers if two.cli_json("runs", "show", f)["agent"] != started)
    two.cli("runs", "cancel", on_other)
    token = assert_eventually(lambda: two.cli_json("runs", "show", run_id)["metadata"].get("token"), timeout=10)
    two.cli("tokens", "complete", token, "--data", "true")
    done = wait_status(two, run_id, DONE, timeout=300)
    for f in fillers:
        two.cli("runs", "cancel", f, check=False)
    assert done["status"] == "COMPLETED", done
    out = done["output"]
    assert out["before"] == out["after"] and out["answer"] is True, out
    assert out["numpy_at"].startswith("/deps/"), out
    restored = [e for e in done["events"] if e["type"] == "restored"]
    assert restored and restored[-1]["agent"] != started, done["events"]


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="torpor-deps-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _project(root: Path, toml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "torpor.toml").write_text(toml)
    (root / "tasks.py").write_text("from torpor import task\n\n@task(id='never-deployed')\ndef t(p):\n    return p\n")
    return root


def test_an_unresolvable_dependency_fails_the_deploy_with_the_resolvers_message(two, scratch):
    bad = _project(scratch / "bad", 'project = "bad-deps"\nmodules = ["tasks"]\n'
                                    'dependencies = ["torpor-no-such-package-zz9==1.0"]\n')
    proc = _deploy(two, bad, check=False)
    assert proc.returncode != 0
    assert "resolving the dependencies failed" in proc.stderr and "torpor-no-such-package-zz9" in proc.stderr, proc
    gone = two.cli("deployments", "show", "--project", "bad-deps", check=False)
    assert gone.returncode != 0 and "no deployment" in gone.stderr


def test_a_python_no_agent_runs_fails_the_deploy_naming_both(two, scratch):
    wrong = _project(scratch / "wrong", 'project = "wrong-python"\nmodules = ["tasks"]\npython = "3.9"\n'
                                        'dependencies = ["idna"]\n')
    proc = _deploy(two, wrong, check=False)
    assert proc.returncode != 0 and "Python 3.9" in proc.stderr and "Python 3.11" in proc.stderr, proc


SMALL = Path(__file__).parent / "deps_small_project"


def test_an_environment_damaged_in_the_store_fails_the_restore_but_never_the_checkpoint(two):
    """The environment is fetched and checked before the snapshot: its failure is not the checkpoint's.

    The run suspends on one agent (which unpacks the environment), the archive in the store is damaged, and the
    restore is sent to the other agent, which must fetch it: each try fails on the sha256, is counted as that
    host's failure, and releases no checkpoint. Once the archive is whole again the run restores from the same
    checkpoint: its nonce, drawn before the suspension, is unchanged.
    """
    from torpor.store import open_store

    env = json.loads(_deploy(two, SMALL).stdout)["environment"]
    store = open_store(f"file://{two.dir / 'store'}")
    key = two.client().get_environment(env["id"]).location
    assert key == f"environments/{env['id']}/{two.client().get_environment(env['id']).sha256}.tar.zst"
    good = store.get_bytes(key)
    run_id = trigger(two, "idna-hold", {})
    suspended = wait_status(two, run_id, {"SUSPENDED"}, timeout=180)
    nonce = suspended["metadata"]["nonce"]
    started = next(e["agent"] for e in suspended["events"] if e["type"] == "started")
    fillers = [trigger(two, "busy", {"seconds": 300}) for _ in range(2)]
    try:
        for f in fillers:
            wait_status(two, f, {"RUNNING"}, timeout=60)
        two.cli("runs", "cancel", next(f for f in fillers if two.cli_json("runs", "show", f)["agent"] != started))
        store.put_bytes(key, good[: len(good) // 2] + bytes(len(good) - len(good) // 2))  # same size, other bytes
        client = two.client()
        client.complete_token(two.cli_json("runs", "show", run_id)["metadata"]["token"], True)

        def refused() -> bool:
            return any("sha256" in e.detail for e in client.get_run(run_id).events)

        assert_eventually(refused, timeout=60, interval=0.02)
        store.put_bytes(key, good)
    finally:
        for f in fillers:
            two.cli("runs", "cancel", f, check=False)
    done = wait_status(two, run_id, DONE, timeout=180)
    types = [e["type"] for e in done["events"]]
    assert done["status"] == "COMPLETED", done
    assert done["output"]["nonce"] == nonce and done["output"]["encoded"] == "xn--bcher-kva.example", done["output"]
    assert "checkpoint_unusable" not in types and "restored" in types, done["events"]
