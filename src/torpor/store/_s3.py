"""A store in an S3-compatible bucket (``s3://bucket/prefix``) through boto3.

Writes stream: whole parts go to a small thread pool while the caller keeps
writing, with at most ``max_concurrency`` parts in flight plus the one being
filled; an object smaller than one part is a single PUT. The object becomes
visible only when the multipart upload completes; any failure or ``abort()``
aborts the upload so no part lingers. Reads fetch ``part_size`` ranges in
parallel (pinned to the object's ETag) and hand them out in order.

Transient errors (throttling, 5xx, dropped connections) are retried by
botocore's standard retry mode. Progress callbacks and errors always reach the
caller on its own thread. Credentials never appear in logs or messages.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import email.utils
import logging
import re
import time
import uuid
from typing import Any, Callable, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
)

from torpor._errors import NotFoundError, StoreError, TorporError
from torpor.store._base import (
    FolderListing,
    Progress,
    Reader,
    Store,
    Writer,
    folder_prefix,
    group_folders,
)
from torpor.store._open import S3Options, check_key

log = logging.getLogger(__name__)
T = TypeVar("T")
_Entries = list[tuple[str, float, int, "bool | None"]]  # module level: S3Store has a method named list
_Uploads = list[dict[str, Any]]

_BODY_READ_ATTEMPTS = 3
_MAX_PARTS = 10_000
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def _client(options: S3Options, *, attempts: int, connect_timeout: float = 10.0):
    style = options.addressing_style
    if style == "auto":
        style = "path" if options.endpoint_url else "virtual"
    config = Config(
        region_name=options.region,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": attempts},
        s3={"addressing_style": style},
        # Several transfers may share the client; each uses max_concurrency connections.
        max_pool_connections=max(10, 4 * options.max_concurrency),
        connect_timeout=connect_timeout,
        read_timeout=120,
        tcp_keepalive=True,
        request_checksum_calculation=options.request_checksums,
    )
    # A session of our own: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        aws_session_token=options.session_token,
        config=config,
    )


class S3Store(Store):
    def __init__(self, *, bucket: str, prefix: str, options: S3Options) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self.url = f"s3://{bucket}/{prefix}"
        self._endpoint = options.endpoint_url or "AWS S3"
        try:
            self._client = _client(options, attempts=options.max_attempts)
        except BotoCoreError as exc:
            raise StoreError(f"cannot set up the S3 client for {self.url}: {exc}") from exc

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self._endpoint!r})"

    # -- errors -------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str, key: str | None = None) -> TorporError:
        """Translate a botocore error into a StoreError (or NotFoundError) that says what to do."""
        where = f"bucket {self.bucket!r} at {self._endpoint}"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            detail = err.get("Message") or code
            if code == "NoSuchBucket" or (code in _MISSING_CODES and key is None):
                return StoreError(
                    f"{doing}: {where} does not exist; create it (for example `mc mb` or "
                    f"`aws s3 mb s3://{self.bucket}`) or fix the store URL"
                )
            if code == "PreconditionFailed" and key is not None:
                # Reads pin every range to the ETag of the first one.
                return StoreError(f"{doing}: {key!r} in {self.url} was replaced while it was being read")
            if code in _MISSING_CODES:
                return NotFoundError(f"no object {key!r} in {self.url} (at {self._endpoint})")
            if code in _CREDENTIAL_CODES:
                return StoreError(
                    f"{doing}: {self._endpoint} rejected the credentials ({code}: {detail}); check the "
                    "access key id and secret access key given for this store"
                )
            if code in _DENIED_CODES:
                return StoreError(
                    f"{doing}: access to {where} was denied ({code}); check the credentials and that "
                    "they may list, read, write and delete objects (and abort multipart uploads) in this bucket"
                )
            return StoreError(f"{doing}: {where} answered {code}: {detail}")
        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"{doing}: no S3 credentials found for {self._endpoint}; give access_key_id and "
                "secret_access_key in S3Options or configure boto3's credential chain"
            )
        if isinstance(exc, BotoConnectionError):
            return StoreError(
                f"{doing}: cannot reach {self._endpoint} ({exc}); is the server running and is the "
                "endpoint URL right?"
            )
        return StoreError(f"{doing}: {where}: {exc}")

    def _call(self, doing: str, fn: Callable[..., T], key: str | None = None, **kwargs: Any) -> T:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, doing, key) from exc

    # -- Store --------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def open_writer(self, key: str, *, progress: Progress | None = None) -> Writer:
        return _S3Writer(self, key, self._key(key), progress)

    def open_reader(self, key: str, *, progress: Progress | None = None) -> Reader:
        return _S3Reader(self, key, self._key(key), progress)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        head = self._call(f"reading the size of {key!r}", self._client.head_object, key, Key=self._key(key))
        return int(head["ContentLength"])

    def list(self, prefix: str) -> list[str]:
        full = self.prefix + check_key(prefix, prefix=True)
        keys: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", ()))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"listing {prefix!r}") from exc
        return sorted(keys)

    def folders(self, prefix: str, *, depth: int) -> FolderListing:
        """One pass over ListObjectsV2 (and the bucket's unfinished multipart uploads): no request per object.

        Unfinished uploads are listed first: one that completes meanwhile is
        then seen as an object with its new time, never missed between the two.
        The listing's time is the Date of the first answer.
        """
        full = self.prefix + check_key(folder_prefix(prefix), prefix=True)
        entries: _Entries = []
        try:
            listed_at, uploads = self._uploads(full)
            entries.extend((u["Key"][len(self.prefix):], self._upload_time(u), 0, True) for u in uploads)
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                entries.extend((obj["Key"][len(self.prefix):], obj["LastModified"].timestamp(), int(obj["Size"]), False)
                               for obj in page.get("Contents", ()))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"listing the folders under {prefix!r}") from exc
        return FolderListing(folders=group_folders(prefix, depth, entries), listed_at=listed_at)

    def _uploads(self, full: str) -> tuple[float, _Uploads]:
        """The server's time and the bucket's unfinished multipart uploads under ``full`` (the store's prefix included).

        Filtered here rather than with ListMultipartUploads' Prefix, which MinIO
        honours only for a whole object name.
        """
        server_time: float | None = None
        uploads: _Uploads = []
        for page in self._client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            if server_time is None:
                server_time = _server_time(page)
            uploads.extend(u for u in page.get("Uploads", ()) if u["Key"].startswith(full))
        return (time.time() if server_time is None else server_time), uploads

    def _upload_time(self, upload: dict[str, Any]) -> float:
        """When an unfinished upload last moved: its newest part, or its start when it has none (or just ended)."""
        newest = upload["Initiated"].timestamp()
        try:
            for page in self._client.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]):
                for part in page.get("Parts", ()):
                    newest = max(newest, part["LastModified"].timestamp())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
        return newest

    def discard_partial(self, prefix: str) -> int:
        """Abort the unfinished multipart uploads under ``prefix``."""
        full = self.prefix + check_key(prefix, prefix=True)
        aborted = 0
        try:
            for upload in self._uploads(full)[1]:
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                        UploadId=upload["UploadId"])
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise
                    continue
                aborted += 1
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"aborting the unfinished uploads under {prefix!r}") from exc
        return aborted

    def delete(self, key: str) -> None:
        self._call(f"deleting {key!r}", self._client.delete_object, Key=self._key(key))

    def delete_prefix(self, prefix: str, *, partial: bool = False) -> int:
        if partial:
            # First, so that an upload completing meanwhile is listed and deleted below.
            self.discard_partial(prefix)
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            resp = self._call(
                f"deleting under {prefix!r}", self._client.delete_objects, Delete={"Objects": batch, "Quiet": True}
            )
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise StoreError(
                    f"deleting under {prefix!r} in {self.url}: {len(resp['Errors'])} objects were not deleted "
                    f"(first: {first.get('Key')!r}: {first.get('Code')}: {first.get('Message')})"
                )
        return len(keys)

    def check(self) -> None:
        # Few attempts and a short connect timeout: a wrong endpoint should fail in seconds.
        client = _client(self.options, attempts=2, connect_timeout=5)
        probe = f"{self.prefix}.torpor-check-{uuid.uuid4().hex}"
        doing = f"checking S3 store {self.url}"
        try:
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"torpor store check")
            try:
                client.head_object(Bucket=self.bucket, Key=probe)
                client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            finally:
                client.delete_object(Bucket=self.bucket, Key=probe)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, doing) from exc
        finally:
            client.close()

    def close(self) -> None:
        self._client.close()


class _S3Writer(Writer):
    def __init__(self, store: S3Store, name: str, key: str, progress: Progress | None) -> None:
        self._store = store
        self._name = name
        self._key = key
        self._progress = progress
        self._part_size = store.options.part_size
        self._concurrency = store.options.max_concurrency
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._pool: cf.ThreadPoolExecutor | None = None
        self._inflight: dict[cf.Future[dict[str, Any]], int] = {}
        self._parts: list[dict[str, Any]] = []
        self._done = False

    def write(self, data: bytes | memoryview, /) -> int:
        if self._done:
            raise StoreError(f"write to {self._name!r} after it was committed or aborted")
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            if len(self._buf) == self._part_size:
                # Sent only once more data arrives, so an object of exactly one part is a plain PUT.
                self._send_part()
            take = min(len(view) - pos, self._part_size - len(self._buf))
            self._buf += view[pos : pos + take]
            pos += take
        return len(view)

    def _send_part(self) -> None:
        body, self._buf = self._buf, bytearray()
        try:
            self._reap(block=False)
            while len(self._inflight) >= self._concurrency:
                self._reap(block=True)
            if self._upload_id is None:
                resp = self._store._call(
                    f"starting the upload of {self._name!r}", self._store._client.create_multipart_upload, Key=self._key
                )
                self._upload_id = resp["UploadId"]
                self._pool = cf.ThreadPoolExecutor(self._concurrency, thread_name_prefix="torpor-s3-put")
                log.debug("multipart upload of %s started (%s)", self._key, self._upload_id)
            assert self._pool is not None
            number = len(self._parts) + len(self._inflight) + 1
            if number > _MAX_PARTS:
                raise StoreError(
                    f"{self._name!r} is larger than {_MAX_PARTS} parts of {self._part_size} bytes, the most S3 "
                    "allows in one upload; raise S3Options.part_size"
                )
            self._inflight[self._pool.submit(self._upload_part, number, body)] = len(body)
        except BaseException as exc:
            self._fail(exc)

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        resp = self._store._call(
            f"uploading part {number} of {self._name!r}",
            self._store._client.upload_part,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        # Parts must be listed with the checksums they were sent with (botocore adds CRC32 by default).
        part = {k: v for k, v in resp.items() if k.startswith("Checksum") and k != "ChecksumType"}
        part.update(PartNumber=number, ETag=resp["ETag"])
        return part

    def _reap(self, *, block: bool) -> None:
        """Collect finished parts (raising the first failure) and report their progress."""
        if not self._inflight:
            return
        if block:
            cf.wait(self._inflight, return_when=cf.FIRST_COMPLETED)
        for fut in [f for f in self._inflight if f.done()]:
            size = self._inflight.pop(fut)
            self._parts.append(fut.result())
            if self._progress is not None:
                self._progress(size)

    def commit(self) -> None:
        if self._done:
            raise StoreError(f"{self._name!r} was already committed or aborted")
        try:
            if self._upload_id is None:
                body = self._buf
                self._store._call(f"uploading {self._name!r}", self._store._client.put_object, Key=self._key, Body=body)
                if self._progress is not None and body:
                    self._progress(len(body))
            else:
                if self._buf:
                    self._send_part()
                while self._inflight:
                    self._reap(block=True)
                parts = sorted(self._parts, key=lambda p: p["PartNumber"])
                self._store._call(
                    f"completing the upload of {self._name!r}",
                    self._store._client.complete_multipart_upload,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
                log.debug("multipart upload of %s completed: %d parts", self._key, len(parts))
        except BaseException as exc:
            self._fail(exc)
        self._done = True
        self._shutdown()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        self._shutdown()  # in-flight parts first: a part finishing after the abort would linger
        if self._upload_id is None:
            return
        try:
            self._store._client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id)
            log.debug("multipart upload of %s aborted (%s)", self._key, self._upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                self._warn_abort(exc)
        except BotoCoreError as exc:
            self._warn_abort(exc)

    def _warn_abort(self, exc: BaseException) -> None:
        log.warning(
            "could not abort the multipart upload %s of %s in %s: %s; its parts stay billed until a bucket "
            "lifecycle rule (AbortIncompleteMultipartUpload) removes them",
            self._upload_id,
            self._key,
            self._store.url,
            self._store._error(exc, "aborting"),
        )

    def _fail(self, exc: BaseException) -> None:
        self.abort()
        if isinstance(exc, TorporError) or not isinstance(exc, Exception):
            raise exc
        raise StoreError(f"uploading {self._name!r} to {self._store.url} failed: {exc!r}") from exc

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._inflight.clear()


class _S3Reader:
    def __init__(self, store: S3Store, name: str, key: str, progress: Progress | None) -> None:
        self._store = store
        self._name = name
        self._key = key
        self._progress = progress
        chunk = store.options.part_size
        self._pool: cf.ThreadPoolExecutor | None = None
        self._inflight: collections.deque[cf.Future[bytes]] = collections.deque()
        self._cur = b""
        self._pos = 0
        self._closed = False
        # The first range also tells the size and the ETag that pins every later range.
        doing = f"reading {name!r}"
        try:
            first = store._client.get_object(Bucket=store.bucket, Key=key, Range=f"bytes=0-{chunk - 1}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise store._error(exc, doing, name) from exc
            first = None  # an empty object has no byte 0
        except BotoCoreError as exc:
            raise store._error(exc, doing, name) from exc
        if first is None:
            head = store._call(doing, store._client.head_object, name, Key=key)
            self._size, self._etag, self._first = int(head["ContentLength"]), head["ETag"], None
        else:
            self._etag = first["ETag"]
            self._size = _total_size(first)
            self._first = first["Body"]
        self._remaining = self._size
        self._first_len = min(self._size, chunk)
        self._ranges = collections.deque((s, min(s + chunk, self._size)) for s in range(chunk, self._size, chunk))
        if self._ranges:
            self._pool = cf.ThreadPoolExecutor(store.options.max_concurrency, thread_name_prefix="torpor-s3-get")
            self._fill()

    def _fill(self) -> None:
        assert self._pool is not None
        while self._ranges and len(self._inflight) < self._store.options.max_concurrency:
            start, end = self._ranges.popleft()
            self._inflight.append(self._pool.submit(self._fetch, start, end))

    def _fetch(self, start: int, end: int) -> bytes:
        doing = f"reading bytes {start}-{end - 1} of {self._name!r}"
        for attempt in range(1, _BODY_READ_ATTEMPTS + 1):
            resp = self._store._call(
                doing,
                self._store._client.get_object,
                self._name,
                Key=self._key,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=self._etag,
            )
            try:
                data = resp["Body"].read()
            except (BotoCoreError, OSError) as exc:
                # botocore retries requests, not a body that broke mid-stream.
                if attempt == _BODY_READ_ATTEMPTS:
                    raise self._store._error(exc, doing) from exc
                log.debug("%s: body read failed (%s), attempt %d", doing, exc, attempt)
                continue
            if len(data) == end - start:
                return data
            if attempt == _BODY_READ_ATTEMPTS:
                raise StoreError(f"{doing}: got {len(data)} bytes instead of {end - start} from {self._store.url}")
        raise AssertionError("unreachable")

    def _next_chunk(self) -> bytes:
        if self._first is not None:
            body, self._first = self._first, None
            try:
                data = body.read(self._first_len)
            except (BotoCoreError, OSError):
                data = b""
            finally:
                body.close()
            if len(data) == self._first_len:
                return data
            return self._fetch(0, self._first_len)
        fut = self._inflight.popleft()
        self._fill()
        return fut.result()

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n`` < 0); fewer only at the end."""
        if self._closed:
            raise StoreError(f"read from {self._name!r} after the reader was closed")
        n = self._remaining if n is None or n < 0 else min(n, self._remaining)
        pieces = []
        want = n
        while want:
            if self._pos == len(self._cur):
                self._cur, self._pos = self._next_chunk(), 0
            take = min(want, len(self._cur) - self._pos)
            pieces.append(self._cur if take == len(self._cur) else self._cur[self._pos : self._pos + take])
            self._pos += take
            want -= take
        self._remaining -= n
        if self._progress is not None and n:
            self._progress(n)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        self._closed = True
        if self._first is not None:
            self._first.close()
            self._first = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._inflight.clear()
        self._cur = b""

    def __enter__(self) -> "_S3Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_time(resp: dict[str, Any]) -> float:
    """The server's clock from an answer's Date header (whole seconds, so never ahead); the local one without it."""
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


def _total_size(resp: dict[str, Any]) -> int:
    match = re.search(r"/(\d+)$", resp.get("ContentRange") or "")
    # No Content-Range: the server ignored the range and sent the whole object.
    return int(match.group(1)) if match else int(resp["ContentLength"])
