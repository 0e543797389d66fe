"""The cost of snapshot encryption: sealed (format 3) against plain (format 2) snapshots, side by side.

Prints one JSON object. Two modes, each alternating sealed and plain round by
round in one process, so that both meet the same machine (it may be shared):

- default, no CRIU: builds an image directory like a CRIU dump of a task
  holding N MB (half random bytes, half repetitive, in one pages file), then
  times the upload of it as a sealed archive (what agents write) and as a
  plain one (what they wrote before encryption: zstd and sha256), and the
  download, verification and unpacking of each, with a file store on local
  disk. Keys upload_sealed / upload_plain / download_sealed / download_plain.
- ``--criu`` (root, runc, CRIU): a task holding N MB (bench/checkpoint.py's)
  is suspended (stop mode: dump, archive, upload, container gone) and
  restored through ContainerManager, once with a sealed and once with a plain
  snapshot per round, a fresh container each time. Keys suspend_sealed /
  suspend_plain / restore_sealed / restore_plain.

  .venv/bin/python bench/seal.py [--mb 512,2048] [--rounds 5] [--criu [--image-dir /dev/shm]] [--dir /var/tmp]

For each size: the median, the best and every round, in seconds, and the
ratios sealed over plain of the medians and of the bests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from torpor._seal import Kek, Keyring
from torpor.agent._snapshot import upload_image
from torpor.agent._unpack import download_image
from torpor.store import open_store


def make_image(d: Path, mb: int) -> None:
    d.mkdir(parents=True)
    half = (mb // 2) << 20
    rnd = random.Random(1)
    with open(d / "pages-1.img", "wb") as f:
        for _ in range(0, half, 64 << 20):
            f.write(rnd.randbytes(min(64 << 20, half)))
        block = b"torpor!!" * (8 << 17)
        for _ in range(0, half, len(block)):
            f.write(block)
    (d / "core-1.img").write_bytes(os.urandom(20_000))
    (d / "pagemap-1.img").write_bytes(os.urandom(50_000))


def summary(mb: int, rounds: int, times: dict[str, list[float]], ops: tuple[str, str]) -> dict[str, object]:
    row: dict[str, object] = {"mb": mb, "rounds": rounds}
    for k, v in times.items():
        row[f"{k}_median_s"] = round(statistics.median(v), 3)
        row[f"{k}_best_s"] = round(min(v), 3)
        row[f"{k}_all_s"] = [round(x, 3) for x in v]
    for op in ops:
        row[f"{op}_sealed_over_plain"] = round(statistics.median(times[f"{op}_sealed"])
                                               / statistics.median(times[f"{op}_plain"]), 3)
        row[f"{op}_sealed_over_plain_best"] = round(min(times[f"{op}_sealed"]) / min(times[f"{op}_plain"]), 3)
    return row


def with_criu(mb: int, rounds: int, work: Path, keys: Keyring, image_dir: Path | None) -> dict[str, object]:
    """Suspend and restore a real task, sealed and plain alternately (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from checkpoint import TASK, wait_for  # the same task as bench/checkpoint.py

    from torpor.agent import AgentConfig, ContainerManager, Runc, find_criu
    from torpor.agent import _containers

    app = work / "app"
    app.mkdir(mode=0o755, exist_ok=True)
    (app / "task.py").write_text(TASK)
    plain = {"on": False}
    sealing = _containers.ArchiveWriter

    def writer(store, run_id, checkpoint_id, *, keys, progress=None):  # type: ignore[no-untyped-def]
        return sealing(store, run_id, checkpoint_id, keys=None if plain["on"] else keys, progress=progress)

    _containers.ArchiveWriter = writer  # type: ignore[misc,assignment]  # the plain rounds: format 2, as before
    store = open_store((work / "store").as_uri())
    mgr = ContainerManager(AgentConfig(state_dir=work / f"agent-{mb}", image_dir=image_dir), runc=Runc(root=work / f"runc-{mb}",
                           criu=find_criu()), store=store, keys=keys)
    times: dict[str, list[float]] = {k: [] for k in ("suspend_sealed", "suspend_plain", "restore_sealed",
                                                     "restore_plain")}
    try:
        for r in range(rounds):
            for label in ("sealed", "plain"):
                run_id = f"seal-{mb}-{r}-{label}"
                log = mgr.run_log(run_id, "stdout")
                c = mgr.start(run_id=run_id, args=["/usr/bin/python3", "/app/task.py"], app_dir=app,
                              env={"HEAP_MB": str(mb)})
                wait_for(lambda: log.exists() and "ready" in log.read_text())
                plain["on"] = label == "plain"
                t = time.monotonic()
                m = mgr.checkpoint(c, kind="suspend")
                times[f"suspend_{label}"].append(time.monotonic() - t)
                assert (m.encryption is None) == (label == "plain")
                size = log.stat().st_size
                t = time.monotonic()
                restored = mgr.restore(m)
                times[f"restore_{label}"].append(time.monotonic() - t)
                wait_for(lambda: log.stat().st_size > size, timeout=30)
                mgr.kill(restored)
                store.delete_prefix(f"runs/{run_id}/")
    finally:
        _containers.ArchiveWriter = sealing  # type: ignore[misc]
        for st in mgr.runc.list():
            mgr.runc.delete(st.id)
    return summary(mb, rounds, times, ("suspend", "restore"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", default="512,2048", help="image sizes, MB, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--criu", action="store_true", help="suspend and restore a real task (root, runc, CRIU)")
    ap.add_argument("--dir", default="/var/tmp", help="where the image, the store and the unpacked copies go")
    ap.add_argument("--image-dir", type=Path, help="with --criu: CRIU scratch (e.g. /dev/shm, to keep disk writeback "
                                                    "out of the figures)")
    args = ap.parse_args()
    keys = Keyring(Kek.generate())
    results = []
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-seal-", dir=args.dir))
    os.chmod(work, 0o711)  # the task's user must traverse the agent's state directory
    try:
        for mb in (int(x) for x in args.mb.split(",")):
            if args.criu:
                scratch = args.image_dir / f"torpor-bench-seal-{os.getpid()}" if args.image_dir else None
                try:
                    results.append(with_criu(mb, args.rounds, work, keys, scratch))
                finally:
                    if scratch is not None:
                        shutil.rmtree(scratch, ignore_errors=True)
                print(json.dumps(results[-1]), file=sys.stderr)
                continue
            image = work / f"image-{mb}"
            make_image(image, mb)
            store = open_store((work / "store").as_uri())
            times: dict[str, list[float]] = {k: [] for k in ("upload_sealed", "upload_plain", "download_sealed",
                                                             "download_plain")}
            for r in range(args.rounds):
                for label, ring in (("sealed", keys), ("plain", None)):
                    cid = f"{label}-{mb}-{r}"
                    t = time.monotonic()
                    m = upload_image(store, image, keys=ring, run_id="bench", checkpoint_id=cid, kind="suspend",
                                     criu_version="", deployment_version="")
                    times[f"upload_{label}"].append(time.monotonic() - t)
                    out = work / f"out-{cid}"
                    t = time.monotonic()
                    download_image(store, m, out, keys=keys)
                    times[f"download_{label}"].append(time.monotonic() - t)
                    shutil.rmtree(out)
                    store.delete_prefix(f"runs/bench/checkpoints/{cid}/")
            results.append(summary(mb, args.rounds, times, ("upload", "download")))
            print(json.dumps(results[-1]), file=sys.stderr)
            shutil.rmtree(image)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"bench": "seal", "criu": args.criu, "cpus": os.cpu_count(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
