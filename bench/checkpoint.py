"""Checkpoint/restore speed and size: torpor's pipeline against raw runc+CRIU and raw boto3.

Prints one JSON object. Needs root, runc, CRIU; the S3 part starts the MinIO
that `make minio` built (or uses TORPOR_BENCH_S3_* for another endpoint).

  .venv/bin/python bench/checkpoint.py [--sizes 64,512,2048] [--stores file,s3]

For each heap size (MB; half random bytes, half repetitive) and store:
  suspend_s      checkpoint request -> snapshot durable in the store, container gone
  restore_s      restore request -> process running again (download included)
  raw_dump_s     runc checkpoint of the same container to local disk (CRIU alone)
  raw_restore_s  runc restore from that local image
  raw_upload_s / raw_download_s (S3 only): boto3 moving the raw image bytes, no CRIU
  stored_bytes, rss_bytes
  sealed         the snapshot is encrypted (always, since manifest format 3)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from torpor.agent import AgentConfig, ContainerManager, Kek, Keyring, Runc, find_criu  # noqa: E402
from torpor.store import open_store  # noqa: E402

TASK = """
import os, random, sys, time
mb = int(os.environ["HEAP_MB"])
half = (mb // 2) << 20
rnd = random.Random(1)
heap = bytearray()
for _ in range(0, half, 64 << 20):  # randbytes overflows past 256 MB at once
    heap += rnd.randbytes(min(64 << 20, half - len(heap)))
heap += b"torpor!!" * (half // 8)
print("ready", flush=True)
while True:
    time.sleep(0.05)
    print("tick", flush=True)
"""


def wait_for(pred, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise TimeoutError("condition not met")


def rss_of_container(runc: Runc, cid: str) -> int:
    st = runc.state(cid)
    import psutil

    proc = psutil.Process(st.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def bench_one(mgr: ContainerManager, app: Path, mb: int, store_kind: str, s3ctx) -> dict:
    run_id = f"bench-{store_kind}-{mb}-{os.getpid()}"
    log = mgr.run_log(run_id, "stdout")
    c = mgr.start(run_id=run_id, args=["/usr/bin/python3", "/app/task.py"], app_dir=app, env={"HEAP_MB": str(mb)})
    wait_for(lambda: log.exists() and "ready" in log.read_text())
    rss = rss_of_container(mgr.runc, c.id)

    # Raw: runc checkpoint (leave running) to local disk, timed; then restore it raw.
    raw_img = mgr.state / f"raw-{run_id}"  # local disk, as the raw figure is defined
    t = time.monotonic()
    mgr.runc.checkpoint(c.id, image_dir=raw_img, work_dir=raw_img.with_suffix(".w"), leave_running=True)
    raw_dump_s = time.monotonic() - t
    raw_bytes = sum(p.stat().st_size for p in raw_img.iterdir())
    result: dict = {"heap_mb": mb, "store": store_kind, "rss_bytes": rss, "raw_dump_s": round(raw_dump_s, 3)}

    if s3ctx is not None:
        client, bucket = s3ctx
        blob = raw_img / "pages-1.img"
        t = time.monotonic()
        for p in raw_img.iterdir():
            client.upload_file(str(p), bucket, f"raw/{run_id}/{p.name}")
        result["raw_upload_s"] = round(time.monotonic() - t, 3)
        dl = raw_img.with_suffix(".dl")
        dl.mkdir()
        t = time.monotonic()
        for p in raw_img.iterdir():
            client.download_file(bucket, f"raw/{run_id}/{p.name}", str(dl / p.name))
        result["raw_download_s"] = round(time.monotonic() - t, 3)
        shutil.rmtree(dl)
        del blob

    # torpor: suspend (stop mode, upload), then restore from the store.
    t = time.monotonic()
    manifest = mgr.checkpoint(c, kind="suspend")
    result["suspend_s"] = round(time.monotonic() - t, 3)
    result["stored_bytes"] = manifest.archive_size
    result["sealed"] = manifest.encryption is not None
    result["image_bytes"] = manifest.raw_bytes
    result["timings_ms"] = manifest.timings_ms
    size = log.stat().st_size
    t = time.monotonic()
    r = mgr.restore(manifest)
    result["restore_s"] = round(time.monotonic() - t, 3)
    result["restore_timings_ms"] = r.timings_ms  # download (fetch, open, unpack), setup, criu (runc restore)
    wait_for(lambda: log.stat().st_size > size, timeout=30)
    mgr.kill(r)

    # Raw restore of the local image (the torpor copy is gone, so no port/pid clash).
    os.chmod(raw_img, 0o755)
    rid = f"raw-{run_id}"
    bundle = mgr.state / "containers" / rid
    # The same network mode as the dumped run (CRIU's empty-ns net: the namespace is made afresh, by the hook).
    spec = mgr._spec(run_id, rid, ["/bin/false"], app, None, __import__("torpor.agent._oci", fromlist=["Limits"]).Limits(),
                     manifest.network or None)
    from torpor.agent._oci import write_bundle

    write_bundle(bundle, spec, criu_config=mgr.criu_config)
    t = time.monotonic()
    p = mgr.runc.spawn_restore(rid, bundle, image_dir=raw_img, work_dir=raw_img.with_suffix(".rw"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pid_file=bundle / "pid")
    wait_for(lambda: (bundle / "pid").exists() or p.poll() is not None)
    result["raw_restore_s"] = round(time.monotonic() - t, 3)
    mgr.runc.delete(rid)
    p.wait()
    mgr.nets.release(rid)
    shutil.rmtree(bundle, ignore_errors=True)
    for suffix in ("", ".w", ".rw"):
        shutil.rmtree(raw_img.with_suffix(suffix) if suffix else raw_img, ignore_errors=True)
    result["suspend_over_raw_dump"] = round(result["suspend_s"] / result["raw_dump_s"], 2)
    result["restore_over_raw_restore"] = round(result["restore_s"] / result["raw_restore_s"], 2)
    if "raw_upload_s" in result:
        result["suspend_over_dump_plus_upload"] = round(result["suspend_s"] / (result["raw_dump_s"] + result["raw_upload_s"]), 2)
    result["stored_over_rss"] = round(result["stored_bytes"] / rss, 2)
    del raw_bytes
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,512,2048")
    ap.add_argument("--stores", default="file,s3")
    ap.add_argument("--image-dir", help="CRIU scratch directory (e.g. a tmpfs such as /dev/shm)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    app = work / "app"
    app.mkdir(mode=0o755)
    (app / "task.py").write_text(TASK)
    criu = find_criu()
    results = []
    server = None
    try:
        for kind in args.stores.split(","):
            s3ctx = None
            if kind == "file":
                store = open_store(f"file://{work}/store")
            else:
                from fixtures.minio import MinioProcess, minio_binary  # type: ignore

                binary = minio_binary()
                if binary is None:
                    raise SystemExit("MinIO is not built: run 'make minio'")
                server = MinioProcess(binary, work / "minio")
                s3 = server.start()
                bucket = "bench"
                s3.client().create_bucket(Bucket=bucket)
                store = open_store(f"s3://{bucket}/torpor", s3=s3.options())
                s3ctx = (s3.client(), bucket)
            image_dir = Path(args.image_dir) / f"torpor-bench-{os.getpid()}" if args.image_dir else None
            mgr = ContainerManager(AgentConfig(state_dir=work / f"agent-{kind}", image_dir=image_dir), runc=Runc(root=work / f"runc-{kind}", criu=criu),
                                   store=store, keys=Keyring(Kek.generate()))
            for mb in sizes:
                results.append(bench_one(mgr, app, mb, kind, s3ctx))
                print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if args.image_dir:
            shutil.rmtree(Path(args.image_dir) / f"torpor-bench-{os.getpid()}", ignore_errors=True)
    print(json.dumps({"bench": "checkpoint", "criu": criu.version, "cpus": os.cpu_count(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
