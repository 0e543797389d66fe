"""Store throughput: upload and download one object through torpor's stores.

Starts its own MinIO (built by `make minio`) unless TORPOR_TEST_S3_* point at
another endpoint, and prints one JSON object:

    .venv/bin/python bench/store.py [--size-mib 256] [--part-size-mib 16] [--concurrency 4]

Figures: MB/s (10^6 bytes per second) through the torpor store (``s3``,
``file``) and, for comparison, through boto3's own managed transfer
(``boto3_transfer``) with the same part size and concurrency.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures.minio import MinioProcess, S3Server, external_server, minio_binary  # noqa: E402
from torpor.store import Store, open_store  # noqa: E402

WRITE = 8 * 1024 * 1024


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def upload(store: Store, key: str, data: bytes) -> None:
    view = memoryview(data)
    with store.open_writer(key) as w:
        for start in range(0, len(data), WRITE):
            w.write(view[start : start + WRITE])


def download(store: Store, key: str, size: int) -> None:
    r = store.open_reader(key)
    got = 0
    try:
        while chunk := r.read(WRITE):
            got += len(chunk)
    finally:
        r.close()
    assert got == size, (got, size)


def store_figures(store: Store, data: bytes, repeat: int) -> dict[str, float]:
    key = f"bench/{uuid.uuid4().hex}"
    up = min(timed(lambda: upload(store, key, data)) for _ in range(repeat))
    down = min(timed(lambda: download(store, key, len(data))) for _ in range(repeat))
    assert store.get_bytes(key) == data, "the object read back differs from what was written"
    store.delete(key)
    return {"upload_s": round(up, 3), "download_s": round(down, 3), **rates(len(data), up, down)}


def rates(size: int, up: float, down: float) -> dict[str, float]:
    return {"upload_mb_s": round(size / up / 1e6, 1), "download_mb_s": round(size / down / 1e6, 1)}


def boto3_figures(server: S3Server, bucket: str, data: bytes, part: int, concurrency: int, repeat: int) -> dict:
    from boto3.s3.transfer import TransferConfig

    client = server.client()
    cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=concurrency)
    key = f"bench/{uuid.uuid4().hex}"
    up = min(timed(lambda: client.upload_fileobj(io.BytesIO(data), bucket, key, Config=cfg)) for _ in range(repeat))
    down = min(timed(lambda: client.download_fileobj(bucket, key, io.BytesIO(), Config=cfg)) for _ in range(repeat))
    client.delete_object(Bucket=bucket, Key=key)
    client.close()
    return {"upload_s": round(up, 3), "download_s": round(down, 3), **rates(len(data), up, down)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--part-size-mib", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs")
    args = ap.parse_args()
    size, part = args.size_mib * 1024 * 1024, args.part_size_mib * 1024 * 1024
    data = os.urandom(size)  # incompressible, as a zstd-compressed snapshot is
    result: dict[str, Any] = {"size_bytes": size, "part_size": part, "max_concurrency": args.concurrency,
                              "cpus": os.cpu_count()}  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="torpor-bench-") as tmp:
        server = external_server()
        minio = None
        if server is None:
            binary = minio_binary()
            if binary is None:
                sys.exit("MinIO is not installed: run `make minio` (or set TORPOR_TEST_S3_*)")
            minio = MinioProcess(binary, Path(tmp) / "minio")
            (Path(tmp) / "minio").mkdir()
            server = minio.start()
        try:
            client = server.client()
            bucket, prefix = server.bucket, f"torpor-bench/{uuid.uuid4().hex}/"
            if bucket is None:
                bucket, prefix = f"torpor-bench-{uuid.uuid4().hex[:12]}", ""
                client.create_bucket(Bucket=bucket)
            result["endpoint"] = "minio (local, loopback)" if minio else server.endpoint
            s3 = open_store(f"s3://{bucket}/{prefix}", s3=server.options(part_size=part, max_concurrency=args.concurrency))
            result["s3"] = store_figures(s3, data, args.repeat)
            s3.close()
            result["boto3_transfer"] = boto3_figures(server, bucket, data, part, args.concurrency, args.repeat)
            if minio is not None:
                client.delete_bucket(Bucket=bucket)
            client.close()
        finally:
            if minio is not None:
                minio.stop()
        result["file"] = store_figures(open_store((Path(tmp) / "file").as_uri()), data, args.repeat)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
