"""torpor and DBOS Transact side by side, on one machine and one PostgreSQL; prints JSON.

  sudo .venv/bin/python bench/versus_dbos.py [--steps 200] [--kb 1024] [--sleep 30]

DBOS (from PyPI, in a virtualenv of its own: $TORPOR_DBOS_VENV, default
/var/tmp/torpor-dbos-venv, made with uv when missing) runs bench/dbos_worker.py,
written as DBOS's docs recommend: each piece of state is a step's output,
checkpointed in Postgres; the wait is DBOS.sleep. torpor runs
bench/project's "build-sleep-use": the same state built by plain calls, then
wait.for_(). Both build byte-identical state (their sha256 must agree).

  a. state: STEPS x KB of state, a durable sleep, then the state used.
     resume_lag_s: how late after the sleep's end the code runs again;
     held_during_wait: what the waiting run keeps (DBOS: its process and RSS;
     torpor: slots in use on agents, 0 when suspended).
  b. kill -9 of the DBOS worker after half the steps, then a new worker:
     until_progress_s (restart -> first step body run anew), replay_s
     (restart -> the workflow has its last recorded step again) and steps
     redone. torpor's side of (b) (a host lost, the run restored from its
     last checkpoint) is not measured by this script.
  c. per-step overhead in normal running: DBOS, a workflow of trivial steps;
     torpor, a plain call inside a task.
  d. bytes written durably: DBOS, the growth of its Postgres database for (a);
     torpor, the stored size of (a)'s snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from e2e_support import Stack  # noqa: E402
from fixtures.postgres import private_cluster  # noqa: E402
from helpers import free_port  # noqa: E402
from torpor._proto.v1 import common_pb2  # noqa: E402
from torpor.client._convert import run_dict  # noqa: E402

WORKER = ROOT / "bench" / "dbos_worker.py"


def dbos_python() -> str:
    venv = Path(os.environ.get("TORPOR_DBOS_VENV", "/var/tmp/torpor-dbos-venv"))
    py = venv / "bin" / "python"
    uv = ROOT / ".venv" / "bin" / "uv"
    if not py.exists():
        subprocess.run([str(uv), "venv", "-q", "-p", "/usr/bin/python3", str(venv)], check=True)
    if subprocess.run([str(py), "-c", "import dbos"], capture_output=True).returncode != 0:
        subprocess.run([str(uv), "pip", "install", "-q", "-p", str(py), "dbos"], check=True)
    return str(py)


def new_db(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


def db_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


class Worker:
    """A DBOS worker process whose stderr lines are kept with the time each arrived."""

    def __init__(self, py: str, *args: str) -> None:
        self.started = time.time()
        self.proc = subprocess.Popen([py, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.time(), line.rstrip()))

    def first(self, prefix: str, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if line.startswith(prefix):
                    return t
            if self.proc.poll() is not None and not any(l.startswith(prefix) for _, l in self.lines):
                raise SystemExit(f"DBOS worker ended ({self.proc.returncode}) before {prefix!r}:\n"
                                 + "\n".join(l for _, l in self.lines[-30:]))
            time.sleep(0.01)
        raise SystemExit(f"DBOS worker: no {prefix!r} within {timeout:.0f} s")

    def result(self, timeout: float) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        self._t.join(timeout=5)
        if self.proc.returncode != 0:
            raise SystemExit(f"DBOS worker failed ({self.proc.returncode}):\n" + "\n".join(l for _, l in self.lines[-30:]))
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def dbos_side(py: str, admin: str, steps: int, kb: int, sleep: float) -> dict:
    out: dict = {"version": subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
                                            capture_output=True, text=True).stdout.strip()}
    # (d) baseline: a database with DBOS's schema and one trivial workflow
    base = new_db(admin, "dbos_base")
    Worker(py, "overhead", base, "1").result(timeout=120)
    empty = db_size(base)
    # (a) + (d)
    url = new_db(admin, "dbos_state")
    w = Worker(py, "state", url, str(steps), str(kb), str(sleep))
    w.first(f"step {steps - 1} ", timeout=600)
    time.sleep(min(2.0, sleep / 2))
    rss = psutil.Process(w.proc.pid).memory_info().rss
    res = w.result(timeout=sleep + 600)
    out["state"] = {
        "resume_lag_s": round(res["t_back"] - res["t_sleep"] - sleep, 3),
        "held_during_wait": {"process": 1, "rss_mb": round(rss / 2**20, 1)},
        "sha256": res["sha256"],
    }
    out["bytes_written"] = db_size(url) - empty
    # (b) kill -9 halfway, then a new worker recovers the workflow
    url = new_db(admin, "dbos_kill")
    w = Worker(py, "state", url, str(steps), str(kb), "1")
    half = steps // 2
    w.first(f"step {half} ", timeout=600)
    w.kill()
    recorded = max(int(l.split()[1]) for _, l in w.lines if l.startswith("step "))
    r = Worker(py, "recover", url, str(steps), str(kb), "1")
    t_exec = r.first(f"exec {recorded + 1}", timeout=600)
    t_replayed = r.first(f"step {recorded} ", timeout=600)
    redone = sorted({int(l.split()[1]) for _, l in r.lines if l.startswith("exec ")} & set(range(recorded + 1)))
    r.first(f"step {steps - 1} ", timeout=600)
    r.kill()
    out["kill9"] = {"killed_after_step": recorded, "until_progress_s": round(t_exec - r.started, 3),
                    "replay_s": round(t_replayed - r.started, 3), "steps_redone": len(redone)}
    # (c)
    url = new_db(admin, "dbos_overhead")
    out["per_step_ms"] = round(Worker(py, "overhead", url, str(steps)).result(timeout=300)["per_step_ms"], 3)
    return out


def torpor_side(steps: int, kb: int, sleep: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-dbos-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    stack = Stack(work / "data", free_port(), 1)
    try:
        stack.start("--slots", "2", "--suspend-threshold", "2")
        stack.cli("deploy", str(ROOT / "bench" / "project"))
        client = stack.client()
        run_id = client.trigger("build-sleep-use", {"steps": steps, "kb": kb, "sleep": sleep}).run_id
        held = None
        deadline = time.monotonic() + sleep + 600
        while time.monotonic() < deadline:
            run = client.get_run(run_id)
            status = common_pb2.RunStatus.Name(run.status)
            if status == "SUSPENDED" and held is None:
                held = {"slots_used": sum(a.slots_used for a in client.list_agents())}
            if status in ("COMPLETED", "FAILED", "CRASHED"):
                break
            time.sleep(0.2)
        r = run_dict(client.get_run(run_id))
        if r["status"] != "COMPLETED":
            raise SystemExit(f"torpor run ended {r['status']}: {r.get('error')}")
        res = r["output"]
        sizes = [c["size_bytes"] for c in r.get("checkpoints", [])]
        return {
            "state": {"resume_lag_s": round(res["t_back"] - res["t_sleep"] - sleep, 3),
                      "held_during_wait": held, "sha256": res["sha256"], "build_s": round(res["build_s"], 3)},
            "bytes_written": max(sizes) if sizes else None,
            "per_step_ms": round(res["per_call_ms"], 6),
        }
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--kb", type=int, default=1024, help="state built by each step")
    ap.add_argument("--sleep", type=float, default=30.0)
    args = ap.parse_args()
    py = dbos_python()
    with private_cluster(durable=True) as pg:
        dbos = dbos_side(py, pg.url("postgres"), args.steps, args.kb, args.sleep)
    torpor = torpor_side(args.steps, args.kb, args.sleep)
    print(json.dumps({"bench": "versus_dbos", "steps": args.steps, "kb_per_step": args.kb, "sleep_s": args.sleep,
                      "same_state": dbos["state"]["sha256"] == torpor["state"]["sha256"],
                      "dbos": dbos, "torpor": torpor}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
