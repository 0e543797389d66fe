"""Environments and placement: a deployment's packages are built for one Python; its runs go only to agents
running it, and an agent that refuses one anyway ends the run with its reason instead of it being placed forever.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path

import pytest

from coord_support import (  # noqa: F401  (fixtures)
    agents, start_coordinator, status, task, wait_status,
)
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2, coordinator_pb2
from torpor.agent._environments import pack
from torpor.client import Client, run_dict
from torpor.store import open_store
from coord_support import API_KEY

_n = itertools.count(1)


@pytest.fixture
def coordinator(start_coordinator, tmp_path):  # type: ignore[no-untyped-def]
    return start_coordinator(store=open_store(f"file://{tmp_path / 'store'}"))


@pytest.fixture
def client(coordinator):  # type: ignore[no-untyped-def]
    with Client(f"127.0.0.1:{coordinator.port}", api_key=API_KEY) as c:
        yield c


def _upload(client: Client, tmp: Path, python: str, env_id: str = "") -> coordinator_pb2.Environment:
    site = tmp / f"site-{next(_n)}"
    site.mkdir()
    (site / "pkg.py").write_text(f"MADE = {time.monotonic_ns()}\n")  # other bytes each time
    sha, size = pack(site, tmp / f"{site.name}.tar.zst")
    header = coordinator_pb2.Environment(id=env_id or f"env-{sha[:24]}", sha256=sha, size_bytes=size, python=python,
                                         platform="x86_64-manylinux_2_28", requirements=["pkg==1"])
    data = (tmp / f"{site.name}.tar.zst").read_bytes()
    return client.put_environment([coordinator_pb2.EnvironmentChunk(header=header),
                                   coordinator_pb2.EnvironmentChunk(data=data)])


def _deploy_with_environment(client: Client, tmp: Path, python: str, *tasks) -> str:  # type: ignore[no-untyped-def]
    env_id = _upload(client, tmp, python).id
    version = f"v-env-{next(_n)}-{time.monotonic_ns()}"
    client.deploy(version, tasks, project="tests", bundle_location=f"deployments/{version}/bundle.tar.zst",
                  environment_id=env_id)
    return env_id


def _unplaced(client: Client, run_id: str) -> str:
    return run_dict(client.get_run(run_id))["unplaced"] or ""


def test_a_run_goes_only_to_an_agent_with_its_environments_python_and_says_why_it_waits(client, agents, tmp_path):
    env_id = _deploy_with_environment(client, tmp_path, "3.12", task("np"))
    other = agents("py311", slots=4, python="3.11", auto_start=False)
    run_id = client.trigger("np").run_id
    reason = assert_eventually(lambda: _unplaced(client, run_id) or None, timeout=10)
    assert "Python 3.12" in reason and "Python 3.11" in reason, reason
    assert other.count("start", run_id) == 0 and status(client, run_id) == "QUEUED"

    right = agents("py312", slots=1, python="3.12", auto_start=False)
    start = right.wait_command("start", run_id)
    assert (start.start.spec.environment_id, start.start.spec.environment_python) == (env_id, "3.12")
    assert other.count("start", run_id) == 0
    assert_eventually(lambda: _unplaced(client, run_id) == "", timeout=10)


def test_an_agent_refusing_the_environments_python_ends_the_run_with_its_reason_and_no_retry(
        client, agents, tmp_path):
    _deploy_with_environment(client, tmp_path, "3.12",
                             task("np", retry=dict(max_attempts=3, factor=2, min_timeout=0.1, max_timeout=1)))
    quiet = agents("unreported", slots=4, auto_start=False)  # reports no Python: placement cannot check it
    run_id = client.trigger("np").run_id
    quiet.wait_command("start", run_id)
    why = "the deployment's environment env-x is built for Python 3.12, and this agent's Python is 3.11"
    quiet.send(command_failed=agent_pb2.CommandFailed(run=quiet.ref(run_id), command="start", error=why,
                                                      environment_refused=True))
    run = wait_status(client, run_id, "CRASHED")
    assert "Python 3.12" in run.error and "Python is 3.11" in run.error, run.error
    time.sleep(1.0)  # several claim rounds: it must not be placed again
    assert quiet.count("start", run_id) == 1 and len(run_dict(client.get_run(run_id))["attempts"]) == 1


def test_an_id_uploaded_twice_keeps_the_first_bytes_and_every_run_gets_their_location(client, agents, tmp_path,
                                                                                     coordinator):
    first = _upload(client, tmp_path, "3.11")
    again = _upload(client, tmp_path, "3.11", env_id=first.id)  # the same id built into other bytes elsewhere
    assert (again.sha256, again.location) == (first.sha256, first.location)
    assert first.location == f"environments/{first.id}/{first.sha256}.tar.zst"
    store = open_store(f"file://{tmp_path / 'store'}")
    assert store.list(f"environments/{first.id}") == [first.location], "the second upload wrote nothing"
    assert hashlib.sha256(store.get_bytes(first.location)).hexdigest() == first.sha256

    version = f"v-env-{next(_n)}-{time.monotonic_ns()}"
    client.deploy(version, [task("np")], project="tests", bundle_location=f"deployments/{version}/bundle.tar.zst",
                  environment_id=first.id)
    a = agents("py311", slots=1, python="3.11", auto_start=False)
    spec = a.wait_command("start", client.trigger("np").run_id).start.spec
    assert (spec.environment_location, spec.environment_sha256) == (first.location, first.sha256)
