"""The SDK's API outside a run: validation at import time, clear errors."""

from __future__ import annotations

import datetime as dt

import pytest

from torpor import ConfigError, ErrorCode, Retry, TorporError, context, task, wait
from torpor.sdk._task import _REGISTRY


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_task_definition_is_frozen_and_complete():
    @task(id="unit-a", retry=Retry(max_attempts=5, factor=3, min_timeout=2, max_timeout=30, randomize=False),
          max_duration=60, queue="q", concurrency_limit=2, checkpoint_every=30, memory_mb=256, cpus=0.5)
    def a(payload):
        return payload["x"] + 1

    assert a({"x": 1}) == 2  # calling the task runs the function here
    d = a.definition.to_dict()
    assert d["id"] == "unit-a" and d["module"] == __name__ and d["function"].endswith("a")
    assert d["retry"] == {"max_attempts": 5, "factor": 3, "min_timeout": 2, "max_timeout": 30, "randomize": False}
    assert d["memory_bytes"] == 256 << 20 and d["concurrency_limit"] == 2 and d["checkpoint_every"] == 30
    with pytest.raises(Exception):
        a.definition.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"id": "Bad Id"}, "task id"),
    ({"id": ""}, "task id"),
    ({"id": "ok", "max_duration": 0}, "max_duration"),
    ({"id": "ok", "concurrency_limit": 0}, "concurrency_limit"),
    ({"id": "ok", "memory_mb": 1.5}, "memory_mb"),
    ({"id": "ok", "retry": {"max_attempts": 2}}, "torpor.Retry"),
])
def test_bad_task_options_fail_at_import(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        task(**kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_attempts": 0}, "max_attempts"),
    ({"factor": 0.5}, "factor"),
    ({"min_timeout": 10, "max_timeout": 1}, "min_timeout"),
])
def test_bad_retry(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Retry(**kwargs)


def test_duplicate_task_id_is_refused():
    @task(id="unit-dup")
    def one(p):
        return 1

    with pytest.raises(ConfigError, match="duplicate task id 'unit-dup'"):
        @task(id="unit-dup")
        def two(p):
            return 2


def test_context_outside_a_run_says_so():
    with pytest.raises(TorporError, match="outside a run") as exc:
        context()
    assert exc.value.code is ErrorCode.FAILED_PRECONDITION


def test_trigger_outside_a_run_asks_for_a_client():
    @task(id="unit-trig")
    def t(p):
        return p

    with pytest.raises(TorporError, match="client=torpor.Client"):
        t.trigger({"x": 1})
    with pytest.raises(ConfigError, match="JSON"):
        t.trigger({"x": object()})


def test_waits_validate_their_arguments():
    with pytest.raises(ConfigError, match="timezone-aware"):
        wait.until(dt.datetime(2030, 1, 1))
    with pytest.raises(ConfigError, match=">= 0"):
        wait.for_(seconds=-1)
    with pytest.raises(TorporError, match="only inside a run"):
        wait.create_token()
    wait.for_(seconds=0.01)  # outside a run a wait is a plain sleep
    wait.until(dt.datetime.now(dt.timezone.utc))


@pytest.mark.parametrize("memory,n", [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5GiB", 3 << 29), (64 << 20, 64 << 20)])
def test_memory_takes_bytes_or_a_size(memory, n):
    from torpor.sdk._task import task as make

    t = make(id=f"mem-{n}", memory=memory)(lambda payload: None)
    assert t.definition.to_dict()["memory_bytes"] == n


@pytest.mark.parametrize("kwargs,fragment", [
    ({"memory": "lots"}, "is not a size"),
    ({"memory": "1MiB"}, "below 16 MiB"),
    ({"memory": "1GiB", "memory_mb": 1024}, "not both"),
    ({"memory": True}, "is not a size"),
])
def test_a_bad_memory_says_what_is_wrong(kwargs, fragment):
    from torpor.sdk._task import task as make

    with pytest.raises(ConfigError, match=fragment):
        make(id="bad-mem", **kwargs)
