"""Chaos soak: many runs through a randomized, seeded mix of the fault harness's faults; prints JSON.

    .venv/bin/python bench/chaos.py [--seed 1] [--runs 200] [--faults 40] [--minutes 25] [--concurrency 8]

It brings up the fault harness's stack (tests/faults/harness_*.py: a bridge,
three agent "hosts" in network namespaces, Postgres, MinIO, a coordinator),
keeps ``--concurrency`` runs of the workload going (a checkpoint() loop, short
in-place waits, a long wait that suspends, a periodic-checkpoint counter), and
every few seconds injects one fault drawn from: kill -9 of an agent and its
containers, SIGSTOP of an agent for 1.5 leases, a partition of a host for 1.5
leases, Postgres frozen or restarted for 2 leases, the coordinator killed and
started again, MinIO killed for a few seconds. Each run is then checked as
the harness's scenarios are (tests/faults/harness_checker.py): COMPLETED with
the expected output, never two copies at once, no step lost or redone beyond
its checkpoint, no attempt spent.

Output: runs, faults injected by kind, completed, lost (finished but not
COMPLETED), stuck (not finished at the end), concurrent-copy violations,
repeated-step violations, other violations, seconds from each fault's end to
the next step of every run it interrupted (p50, max), and a sample of the
violations. Needs root, like the harness. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

from harness_checker import Checker, Expect  # noqa: E402
from harness_ledger import by_run, read  # noqa: E402
from harness_stack import TERMINAL, Stack, status_name  # noqa: E402

LEASE = 3.0
AGENTS = {"a1": 4, "a2": 4, "a3": 4}
FAULTS = ["agent_kill", "agent_stop", "partition", "postgres_freeze", "postgres_restart", "coordinator_kill",
          "minio_kill"]


def workload(rng: random.Random) -> tuple[str, dict, float]:
    """(task, payload, checkpoint_every) of one run: a few seconds to a few tens of seconds of steps."""
    kind = rng.choice(["ckpt-loop", "short-waits", "long-wait", "counter"])
    steps = rng.randint(8, 25)
    if kind == "ckpt-loop":
        return kind, {"steps": steps, "pause": 0.15}, 0.0
    if kind == "short-waits":
        return kind, {"steps": steps, "short": 0.3}, 1.0
    if kind == "long-wait":
        return kind, {"steps": steps, "pause": 0.1, "wait": 4, "wait_after": rng.randint(1, steps)}, 0.0
    return kind, {"steps": steps, "pause": 0.2}, 1.0


class Chaos:
    def __init__(self, stack: Stack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.expects: list[Expect] = []
        self.faults: list[dict] = []

    def trigger(self) -> None:
        task, payload, every = workload(self.rng)
        run_id = self.stack.trigger(task, **payload)
        # Any fault may hit any run: host failures are allowed (the checker still forbids spent attempts).
        self.expects.append(Expect(run_id, task, payload["steps"], host_lost=True, periodic=every))

    def unfinished(self) -> list[str]:
        out = []
        for e in self.expects:
            try:
                if status_name(self.stack.run(e.run_id)) not in TERMINAL:
                    out.append(e.run_id)
            except Exception:  # noqa: BLE001 - the coordinator is down: count it as unfinished
                out.append(e.run_id)
        return out

    def inject(self, kind: str) -> None:
        s = self.stack
        victim = s.agents[self.rng.choice(sorted(s.agents))]
        hold = 1.5 * LEASE
        started = time.time()
        if kind == "agent_kill":
            victim.crash()
            time.sleep(self.rng.uniform(0.5, 2.0))
            s.restart_agent(victim.name)
        elif kind == "agent_stop":
            victim.pause()
            time.sleep(hold)
            victim.resume()
        elif kind == "partition":
            s.net.partition(victim.host)
            time.sleep(hold)
            s.net.heal(victim.host)
        elif kind == "postgres_freeze":
            s.postgres.freeze()
            time.sleep(2 * LEASE)
            s.postgres.thaw()
        elif kind == "postgres_restart":
            s.postgres.crash()
            time.sleep(2 * LEASE)
            s.postgres.start()
        elif kind == "coordinator_kill":
            assert s.coords is not None
            s.coords.procs["c1"].kill()
            time.sleep(self.rng.uniform(0.5, 3.0))
            s.coords.start("c1")
        elif kind == "minio_kill":
            assert s.minio is not None
            s.minio.kill()
            time.sleep(self.rng.uniform(1.0, 4.0))
            s.minio.start()
        self.faults.append({"kind": kind, "target": victim.name if kind in ("agent_kill", "agent_stop", "partition")
                            else kind.split("_")[0], "start": started, "end": time.time()})


def recovery_seconds(faults: list[dict], steps_by_run: dict[str, list], finished_at: dict[str, float]) -> list[float]:
    """Per fault: from its end until every run that was making steps just before it made another (or finished)."""
    out = []
    for f in faults:
        waits = []
        for run, steps in steps_by_run.items():
            before = [st for st in steps if f["start"] - 3.0 <= st.t < f["start"]]
            if not before:
                continue
            after = [st.t for st in steps if st.t >= f["end"]]
            nxt = min(after + ([finished_at[run]] if run in finished_at else []), default=None)
            if nxt is not None:
                waits.append(max(0.0, nxt - f["end"]))
        if waits:
            out.append(max(waits))
    return out


def stderr_tail(stack: Stack, run_id: str, chars: int = 1500) -> str:
    try:
        data = b"".join(c.data for c in stack.client().stream_logs(run_id, timeout=10) if c.stream == "stderr")
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        return f"(logs unavailable: {exc})"
    return data.decode(errors="replace")[-chars:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200, help="runs to start in all")
    ap.add_argument("--faults", type=int, default=40, help="faults to inject in all")
    ap.add_argument("--concurrency", type=int, default=8, help="runs kept going at once")
    ap.add_argument("--minutes", type=float, default=25.0, help="stop starting runs and faults after this long")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    rng = random.Random(args.seed)
    stack = Stack(lease=LEASE, heartbeat=1.0, suspend_threshold=2.0)
    t0 = time.monotonic()
    try:
        stack.start(AGENTS)
        chaos = Chaos(stack, rng)
        deadline = t0 + args.minutes * 60
        # Spread the faults over the time the runs take: about one fault per runs/faults runs started.
        every = max(1, args.runs // max(1, args.faults))
        while len(chaos.expects) < args.runs and time.monotonic() < deadline:
            while len(chaos.unfinished()) >= args.concurrency and time.monotonic() < deadline:
                time.sleep(0.5)
            chaos.trigger()
            if len(chaos.faults) < args.faults and len(chaos.expects) % every == 0:
                time.sleep(rng.uniform(0.5, 2.5))  # let the new run get going before the fault
                kind = rng.choice(FAULTS)
                print(f"[{time.monotonic() - t0:6.0f}s] run {len(chaos.expects)}: {kind}", file=sys.stderr,
                      flush=True)
                chaos.inject(kind)
        checker = Checker(stack)
        runs = checker.finished(chaos.expects, timeout=180)
        problems = checker.violations(chaos.expects, runs)
        steps = by_run(read(stack.ledger_files()))
        finished_at = {r: run.finished_at.seconds + run.finished_at.nanos / 1e9 for r, run in runs.items()
                       if run.HasField("finished_at")}
        recovery = recovery_seconds(chaos.faults, steps, finished_at)
        flat = [(r, p) for r, ps in problems.items() for p in ps
                if not p.startswith("copies:") and not p.startswith("run ")]
        by_kind: dict[str, int] = {}
        for f in chaos.faults:
            by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
        statuses = [status_name(r) for r in runs.values()]
        result = {
            "seed": args.seed, "runs": len(chaos.expects), "faults": len(chaos.faults), "faults_by_kind": by_kind,
            "completed": statuses.count("COMPLETED"),
            "lost": sum(1 for s in statuses if s in TERMINAL and s != "COMPLETED"),
            "stuck": sum(1 for s in statuses if s not in TERMINAL) + len(chaos.expects) - len(runs),
            "concurrent_copy_violations": sum(1 for _, p in flat if p.startswith("two copies ran at once")),
            "repeated_step_violations": sum(1 for _, p in flat if "redid steps" in p or "started the run over" in p
                                            or "began at" in p),
            "runs_with_violations": len(problems),
            "attempts_spent": sum(1 for _, p in flat if p.startswith("an attempt was spent")),
            "fault_to_progress_s": {
                "p50": round(statistics.median(recovery), 2) if recovery else None,
                "max": round(max(recovery), 2) if recovery else None, "n": len(recovery)},
            "seconds": round(time.monotonic() - t0, 1),
            "violations_sample": [f"{r}: {p}" for r, p in flat[:10]],
            # The end of each such run's stderr: why a task process died, for instance.
            "stderr_tails": {r: stderr_tail(stack, r) for r in list(problems)[:5]},
        }
        print(json.dumps(result, indent=1))
        return 0 if not problems else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
