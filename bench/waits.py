"""Wait latency through a real `torpor dev` stack (file store), against raw runc.

  .venv/bin/python bench/waits.py [--samples 8] [--mb 50]

suspend_latency_s: wait called in the task -> snapshot durable and slot free ("suspended" event)
resume_latency_s:  wait resolved ("restore_queued" event) -> user code running again
raw_*: runc checkpoint/restore of a container holding the same memory, to local disk
Prints JSON with p50/p90/max and the ratios to raw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e"), str(ROOT / "bench")]

from e2e_support import Stack  # noqa: E402
from helpers import free_port  # noqa: E402


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=dt.timezone.utc).timestamp()


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"p50": round(statistics.median(s), 3), "p90": round(s[min(len(s) - 1, int(0.9 * len(s)))], 3),
            "max": round(s[-1], 3), "n": len(s)}


def raw_runc(mb: int, samples: int) -> dict[str, dict[str, float]]:
    import subprocess

    from torpor._seal import Kek, Keyring
    from torpor.agent import AgentConfig, ContainerManager, Runc, find_criu
    from torpor.agent._oci import Limits, write_bundle
    from torpor.store import open_store

    work = Path(tempfile.mkdtemp(prefix="torpor-bw-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    app = work / "app"
    app.mkdir(mode=0o755)
    (app / "t.py").write_text(
        "import os, time\nhalf = %d << 19\nb = bytearray(os.urandom(half)) + bytearray(b'torpor!!' * (half // 8))\n"
        "print('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n" % mb)
    mgr = ContainerManager(AgentConfig(state_dir=work / "a"), runc=Runc(root=work / "r", criu=find_criu()),
                           store=open_store(f"file://{work}/store"), keys=Keyring(Kek.generate()))
    dumps, restores = [], []
    try:
        for i in range(samples):
            c = mgr.start(run_id=f"raw{i}", args=["/usr/bin/python3", "/app/t.py"], app_dir=app)
            log = mgr.run_log(f"raw{i}", "stdout")
            while not (log.exists() and "ready" in log.read_text()):
                time.sleep(0.02)
            img = work / f"img{i}"
            t = time.monotonic()
            mgr.runc.checkpoint(c.id, image_dir=img, work_dir=work / f"w{i}", leave_running=False)
            c.wait()
            dumps.append(time.monotonic() - t)
            mgr._cleanup(c.id, c.bundle, c.socket_dir)
            os.chmod(img, 0o755)
            # The agent's default network mode, as the dumped container had (a fresh namespace, given back below).
            spec = mgr._spec(f"raw{i}", f"rr{i}", ["/bin/false"], app, None, Limits(), None)
            bundle = write_bundle(work / f"b{i}", spec, criu_config=mgr.criu_config)
            t = time.monotonic()
            p = mgr.runc.spawn_restore(f"rr{i}", bundle, image_dir=img, work_dir=work / f"rw{i}",
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pid_file=bundle / "pid")
            while not (bundle / "pid").exists() and p.poll() is None:
                time.sleep(0.002)
            restores.append(time.monotonic() - t)
            mgr.runc.delete(f"rr{i}")
            p.wait()
            mgr.nets.release(f"rr{i}")
    finally:
        for st in mgr.runc.list():
            mgr.runc.delete(st.id)
        shutil.rmtree(work, ignore_errors=True)
    return {"raw_dump_s": pct(dumps), "raw_restore_s": pct(restores)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-waits-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    stack = Stack(work / "data", free_port(), 2)
    suspend, resume, other = [], [], 0
    try:
        stack.start("--slots", "1", "--suspend-threshold", "2")
        stack.cli("deploy", str(ROOT / "bench" / "project"))
        client = stack.client()
        for i in range(args.samples):
            run_id = client.trigger("hold-and-wait", {"mb": args.mb, "seconds": args.seconds}).run_id
            run = client.wait_for_run(run_id, timeout=120)
            from torpor.client._convert import run_dict

            r = run_dict(client.get_run(run_id))
            if r["status"] != "COMPLETED":
                raise SystemExit(f"sample {i}: run ended {r['status']}: {r['error']}")
            ev = {e["type"]: e for e in r["events"]}
            out = r["output"]
            suspend.append(ts(ev["suspended"]["time"]) - out["t_wait"])
            resume.append(out["t_back"] - ts(ev["restore_queued"]["time"]))
            if ev["restoring"]["agent"] != ev["started"]["agent"]:
                other += 1
            print(json.dumps({"sample": i, "suspend_s": round(suspend[-1], 3), "resume_s": round(resume[-1], 3),
                              "from": ev["started"]["agent"], "to": ev["restoring"]["agent"]}), file=sys.stderr)
            del run
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    raw = raw_runc(args.mb, min(args.samples, 5))
    result = {
        "bench": "waits", "mb": args.mb, "store": "file",
        "suspend_latency_s": pct(suspend), "resume_latency_s": pct(resume),
        "resumed_on_other_agent": f"{other}/{len(resume)}",
        **raw,
    }
    result["suspend_over_raw_dump"] = round(result["suspend_latency_s"]["p50"] / raw["raw_dump_s"]["p50"], 2)
    result["resume_over_raw_restore"] = round(result["resume_latency_s"]["p50"] / raw["raw_restore_s"]["p50"], 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
