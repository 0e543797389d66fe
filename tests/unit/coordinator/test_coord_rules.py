"""Pure rules of the coordinator: the transition table, backoff, input limits, key hashing."""

from __future__ import annotations

import hashlib

import pytest

from torpor._errors import ConfigError, ErrorCode
from torpor.coordinator import ALLOWED, TERMINAL, Limits, retry_delay
from torpor.coordinator._auth import hash_secret
from torpor.coordinator._triggers import DEFAULT_RETRY, NewRun, check_batch, check_new_run, retry_policy
from torpor._proto.v1 import common_pb2


def test_transition_table_matches_the_lifecycle():
    assert ALLOWED["STARTING"] == {"QUEUED"}
    assert ALLOWED["SUSPENDED"] == {"SUSPENDING"}
    assert ALLOWED["SUSPENDING"] == {"RUNNING"}
    assert {"STARTING", "RESTORING", "SUSPENDING"} == ALLOWED["RUNNING"]
    assert "RETRY_WAIT" in ALLOWED["QUEUED"]
    # nothing ever leaves a terminal state
    for target, sources in ALLOWED.items():
        assert not (sources & TERMINAL), target
    # every status of the proto is a known state
    names = set(common_pb2.RunStatus.keys()) - {"RUN_STATUS_UNSPECIFIED"}
    assert names == set(ALLOWED) | {"QUEUED"}


@pytest.mark.parametrize("attempt, expected", [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (20, 60.0)])
def test_backoff_without_jitter(attempt, expected):
    assert retry_delay(attempt, 2.0, 1.0, 60.0, False) == expected


def test_backoff_jitter_multiplies_by_one_to_two():
    assert retry_delay(3, 2.0, 1.0, 60.0, True, rand=0.0) == 4.0
    assert retry_delay(3, 2.0, 1.0, 60.0, True, rand=0.5) == 6.0
    samples = [retry_delay(2, 2.0, 1.0, 60.0, True) for _ in range(500)]
    assert all(2.0 <= s < 4.0 for s in samples) and max(samples) - min(samples) > 1.0


def test_retry_policy_defaults():
    assert retry_policy(common_pb2.TaskSettings(id="t")) == DEFAULT_RETRY == (3, 2.0, 1.0, 60.0, True)
    custom = common_pb2.TaskSettings(id="t", retry=common_pb2.RetryPolicy(max_attempts=5, min_timeout=0.5))
    assert retry_policy(custom) == (5, 2.0, 0.5, 60.0, False)


LIMITS = Limits()


@pytest.mark.parametrize("item, message", [
    (NewRun(task=""), "task is required"),
    (NewRun(task="t", payload_json="nope"), "payload is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (NewRun(task="t", payload_json="1" * (3 * 1024 * 1024 + 1)), "payload is 3145729 bytes; the limit is 3145728 bytes"),
    (NewRun(task="t", tags=["a"] * 11), "11 tags given; at most 10 are allowed"),
    (NewRun(task="t", tags=[""]), "tag '' must have 1 to 128 characters"),
    (NewRun(task="t", idempotency_key="k" * 2049), "idempotency key has 2049 characters; at most 2048 are allowed"),
    (NewRun(task="t", delay=-0.5), "delay must be zero or positive, got -0.5"),
    (NewRun(task="t", tags=["a\0b"]), "tag 'a\\x00b' contains a NUL character, which is not allowed"),
    (NewRun(task="t", concurrency_key="user\0"), "concurrency key 'user\\x00' contains a NUL character, which is not allowed"),
])
def test_bad_items(item, message):
    with pytest.raises(ConfigError) as err:
        check_new_run(item, LIMITS)
    assert err.value.message == message and err.value.code == ErrorCode.INVALID_ARGUMENT


def test_limits_are_inclusive():
    check_new_run(NewRun(task="t", payload_json="1" * (3 * 1024 * 1024), tags=["a"] * 10,
                         idempotency_key="k" * 2048), LIMITS)
    check_batch([NewRun(task="t")] * 1000, LIMITS)
    with pytest.raises(ConfigError, match="batch has 1001 items; at most 1000 are allowed"):
        check_batch([NewRun(task="t")] * 1001, LIMITS)
    with pytest.raises(ConfigError, match="^item 1: 11 tags given"):
        check_batch([NewRun(task="t"), NewRun(task="t", tags=["x"] * 11)], LIMITS)


def test_secrets_are_hashed_with_sha256():
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()
