"""Many runs suspended at once, then all their waits resolved together; prints JSON.

  sudo .venv/bin/python bench/scale.py [--runs 1000] [--agents 2] [--slots 16]

A `torpor dev` stack (file store) with ``--agents`` agents. ``--runs`` runs of
bench/project's "park" task (256 KiB of state, a token wait) are triggered;
each suspends once it has named its token. When all are SUSPENDED, every
token is completed at once (8 client threads) and the runs resume wherever
there is a free slot.

  suspend_all_s        first trigger -> all runs SUSPENDED
  resume_all_s         first token completed -> all runs COMPLETED
  resumes_per_second   runs / resume_all_s
  peak_rss_mb          peak resident memory, sampled every 0.5 s, of the coordinator, each agent
                       (the agent process alone, not its containers) and PostgreSQL (all its processes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from e2e_support import Stack  # noqa: E402
from helpers import free_port  # noqa: E402


class RssSampler:
    """Peak RSS of the stack's processes by role, from the `torpor dev` process tree."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    @staticmethod
    def _role(p: psutil.Process) -> str | None:
        try:
            cmd = p.cmdline()
            name = p.name()
        except psutil.Error:
            return None
        text = " ".join(cmd)
        if name.startswith("postgres"):
            return "postgres"
        if "torpor.cli" in text and " agent" in text:
            i = cmd.index("--name") + 1 if "--name" in cmd else -1
            return f"agent {cmd[i]}" if i > 0 else "agent"
        if "torpor.cli" in text and " dev" in text:
            return "torpor dev (supervisor)"
        if "torpor.cli" in text and "coordinator" in text:
            return "coordinator"
        return None

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            now: dict[str, float] = {}
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                role = self._role(p)
                if role is None:
                    continue
                try:
                    now[role] = now.get(role, 0.0) + p.memory_info().rss / 2**20
                except psutil.Error:
                    pass
            for role, mb in now.items():
                self.peak[role] = max(self.peak.get(role, 0.0), mb)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._t.join()
        return {k: round(v, 1) for k, v in sorted(self.peak.items())}


def count(client, status: str) -> int:  # type: ignore[no-untyped-def]
    n, token = 0, ""
    while True:
        page = client.list_runs(status=[status], task="park", page_size=500, page_token=token)
        n += len(page.runs)
        token = page.next_page_token
        if not token:
            return n


def wait_for_all(client, status: str, runs: int, since: float, deadline: float, every: float) -> None:  # type: ignore[no-untyped-def]
    while (n := count(client, status)) < runs:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {n}/{runs} runs {status} in time")
        print(json.dumps({status.lower(): n, "s": round(time.monotonic() - since, 1)}), file=sys.stderr)
        time.sleep(every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-scale-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    stack = Stack(work / "data", free_port(), args.agents)
    result: dict[str, object] = {"bench": "scale", "runs": args.runs, "agents": args.agents, "slots": args.slots,
                                 "cpus": os.cpu_count(), "store": "file"}
    try:
        stack.start("--slots", str(args.slots), "--suspend-threshold", "1")
        stack.cli("deploy", str(ROOT / "bench" / "project"))
        client = stack.client()
        assert stack.proc is not None
        sampler = RssSampler(stack.proc.pid)
        deadline = time.monotonic() + args.timeout
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            run_ids = list(pool.map(lambda i: client.trigger("park", {"i": i}).run_id, range(args.runs)))
        result["trigger_s"] = round(time.monotonic() - t0, 2)
        wait_for_all(client, "SUSPENDED", args.runs, t0, deadline, every=5)
        result["suspend_all_s"] = round(time.monotonic() - t0, 2)
        tokens = [json.loads(client.get_run(r).metadata_json)["token"] for r in run_ids]
        t1 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: client.complete_token(t, {"go": True}), tokens))
        result["complete_tokens_s"] = round(time.monotonic() - t1, 2)
        wait_for_all(client, "COMPLETED", args.runs, t1, deadline, every=2)
        result["resume_all_s"] = round(time.monotonic() - t1, 2)
        result["resumes_per_second"] = round(args.runs / (time.monotonic() - t1), 1)
        result["failed"] = count(client, "FAILED") + count(client, "CRASHED")
        result["peak_rss_mb"] = sampler.stop()
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
