"""The S3 store against a real S3 server: multipart, aborts, retries, parallel reads, errors."""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections import Counter
from typing import Any, Iterator

import pytest
from botocore.awsrequest import AWSResponse
from helpers import free_port

from fixtures.minio import TEST_PART_SIZE, S3Server, S3Target
from torpor._errors import StoreError
from torpor.store import S3Options, Store, open_store

MiB = 1024 * 1024


class Calls:
    """Counts S3 operations a store's client makes, and how many ran at once."""

    def __init__(self, store: Store, delay: dict[str, float] | None = None) -> None:
        self.count: Counter[str] = Counter()
        self.ranged_gets = 0
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._delay = delay or {}
        events = store._client.meta.events  # type: ignore[attr-defined]
        events.register("before-call.s3", self._before)
        events.register("after-call.s3", self._after)

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.count[model.name] += 1
            self.ranged_gets += model.name == "GetObject" and "Range" in params.get("headers", {})
            self.running[model.name] += 1
            self.peak[model.name] = max(self.peak[model.name], self.running[model.name])
        time.sleep(self._delay.get(model.name, 0))

    def _after(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.running[model.name] -= 1


def fail_on(store: Store, operation: str, *, nth: int = 1) -> None:
    """Make the ``nth`` call of ``operation`` fail before it is sent."""
    seen = Counter[str]()

    def hook(**_: Any) -> None:
        seen[operation] += 1
        if seen[operation] == nth:
            raise RuntimeError(f"injected failure in {operation}")

    store._client.meta.events.register(f"before-call.s3.{operation}", hook)  # type: ignore[attr-defined]


@pytest.fixture
def store(s3_target: S3Target) -> Iterator[Store]:
    s = s3_target.open()
    yield s
    s.close()


def test_an_upload_in_progress_is_seen_and_abort_removes_it(store: Store, s3_target: S3Target) -> None:
    w = store.open_writer("runs/r1/snap")
    w.write(os.urandom(2 * TEST_PART_SIZE + MiB))
    # The instrument the other tests rely on really sees incomplete uploads.
    assert [u["Key"] for u in s3_target.multipart_uploads()] == [s3_target.prefix + "runs/r1/snap"]
    w.abort()
    assert s3_target.multipart_uploads() == []
    assert s3_target.raw_keys() == []


def test_exception_inside_with_leaves_no_upload(store: Store, s3_target: S3Target) -> None:
    with pytest.raises(ValueError):
        with store.open_writer("snap") as w:
            w.write(os.urandom(3 * TEST_PART_SIZE))
            raise ValueError("the dump failed")
    assert s3_target.multipart_uploads() == []
    assert s3_target.raw_keys() == []


@pytest.mark.parametrize("operation", ["UploadPart", "CompleteMultipartUpload"])
def test_a_failed_upload_is_aborted(store: Store, s3_target: S3Target, operation: str) -> None:
    fail_on(store, operation, nth=2 if operation == "UploadPart" else 1)
    with pytest.raises(StoreError, match="injected failure") as info:
        with store.open_writer("snap") as w:
            for _ in range(4):
                w.write(os.urandom(TEST_PART_SIZE))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert s3_target.multipart_uploads() == []
    assert s3_target.raw_keys() == []


def test_a_transient_server_error_is_retried(store: Store) -> None:
    failures = []

    def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
        if failures:
            return None
        failures.append(request.url)
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return AWSResponse(request.url, 503, {}, _Raw(body))

    store._client.meta.events.register("before-send.s3.UploadPart", throttle_once)  # type: ignore[attr-defined]
    data = os.urandom(2 * TEST_PART_SIZE + 1)
    store.put_bytes("snap", data)
    assert len(failures) == 1
    assert store.get_bytes("snap") == data


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def test_one_part_or_less_is_a_single_put(store: Store) -> None:
    calls = Calls(store)
    store.put_bytes("exact", os.urandom(TEST_PART_SIZE))
    store.put_bytes("small", b"x")
    assert calls.count["PutObject"] == 2 and calls.count["CreateMultipartUpload"] == 0
    store.put_bytes("more", os.urandom(TEST_PART_SIZE + 1))
    assert calls.count["CreateMultipartUpload"] == 1 and calls.count["UploadPart"] == 2


def test_parts_upload_in_parallel_within_the_bound(s3_target: S3Target) -> None:
    store = s3_target.open(max_concurrency=2)
    calls = Calls(store, delay={"UploadPart": 0.1})
    on_threads: set[str] = set()
    data = os.urandom(6 * TEST_PART_SIZE)
    with store.open_writer("snap", progress=lambda n: on_threads.add(threading.current_thread().name)) as w:
        for start in range(0, len(data), MiB):
            w.write(data[start : start + MiB])
    assert calls.count["UploadPart"] == 6
    assert calls.peak["UploadPart"] == 2  # parallel, and never more than max_concurrency
    assert on_threads == {threading.current_thread().name}  # progress arrives on the caller's thread
    assert store.get_bytes("snap") == data
    store.close()


def test_reader_fetches_ranges_in_parallel_and_in_order(store: Store) -> None:
    data = os.urandom(5 * TEST_PART_SIZE + 4321)
    store.put_bytes("snap", data)
    calls = Calls(store, delay={"GetObject": 0.1})
    progress: list[int] = []
    assert store.open_reader("snap", progress=progress.append).read() == data
    assert calls.count["GetObject"] == 6 and calls.ranged_gets == 6
    assert calls.peak["GetObject"] > 1
    assert sum(progress) == len(data)


def test_reader_refuses_an_object_replaced_mid_read(s3_target: S3Target) -> None:
    store = s3_target.open(max_concurrency=1)
    store.put_bytes("snap", os.urandom(5 * TEST_PART_SIZE))
    r = store.open_reader("snap")
    try:
        store.put_bytes("snap", os.urandom(5 * TEST_PART_SIZE))
        with pytest.raises(StoreError, match="replaced while it was being read"):
            while r.read(MiB):
                pass
    finally:
        r.close()
        store.close()


def test_prefixes_keep_stores_apart(s3_target: S3Target, s3_server: S3Server) -> None:
    one = open_store(s3_target.url + "one", s3=s3_server.options())
    two = open_store(s3_target.url + "two/", s3=s3_server.options())
    one.put_bytes("k", b"1")
    two.put_bytes("k", b"2")
    assert one.list("") == ["k"] and two.list("") == ["k"]
    assert sorted(s3_target.raw_keys()) == [s3_target.prefix + "one/k", s3_target.prefix + "two/k"]
    assert one.delete_prefix("") == 1
    assert two.get_bytes("k") == b"2"


def _assert_no_secret(exc: BaseException, *secrets: str) -> None:
    text = "".join(traceback.format_exception(exc))
    for secret in secrets:
        assert secret not in text


def test_check_names_a_missing_bucket(s3_server: S3Server) -> None:
    bucket = f"torpor-missing-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}/p", s3=s3_server.options())
    with pytest.raises(StoreError) as info:
        store.check()
    message = str(info.value)
    assert bucket in message and s3_server.endpoint in message and "does not exist" in message
    _assert_no_secret(info.value, s3_server.secret_key)
    with pytest.raises(StoreError, match="does not exist"):
        store.put_bytes("k", b"x")


def test_check_rejects_bad_credentials_without_leaking_them(s3_target: S3Target, s3_server: S3Server) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    store = s3_target.open(secret_access_key=wrong)
    with pytest.raises(StoreError) as info:
        store.check()
    message = str(info.value)
    assert "credentials" in message and s3_server.endpoint in message
    _assert_no_secret(info.value, wrong, s3_server.secret_key)


def test_check_reports_an_unreachable_endpoint_quickly() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = open_store("s3://bucket/p", s3=S3Options(endpoint_url=endpoint, access_key_id="a", secret_access_key="b"))
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach") as info:
        store.check()
    assert endpoint in str(info.value)
    assert time.monotonic() - started < 15
