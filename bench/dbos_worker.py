"""The DBOS side of bench/versus_dbos.py, run in a virtualenv of its own that has dbos (not a torpor dependency).

  python dbos_worker.py state DB_URL STEPS CHUNK_KB SLEEP    the state workload; prints a JSON line at the end
  python dbos_worker.py recover DB_URL STEPS CHUNK_KB SLEEP   launch only: DBOS recovers the workflow left pending
  python dbos_worker.py overhead DB_URL STEPS                 a workflow of STEPS trivial steps; prints per-step ms

Written the way DBOS's docs recommend: the work that builds state is a step
(its output is checkpointed in Postgres), the wait is DBOS.sleep (durable).
Progress goes to stderr as "exec I" (a step body ran) and "step I T" (the
workflow has step I's output at time T), so the caller can kill it midway
and time the recovery.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time

from dbos import DBOS, DBOSConfig


def main() -> int:
    mode, url = sys.argv[1], sys.argv[2]
    DBOS(config=DBOSConfig(name="torpor-bench", system_database_url=url))

    @DBOS.step()
    def make_chunk(i: int, kb: int) -> bytes:
        print(f"exec {i}", file=sys.stderr, flush=True)
        return random.Random(i).randbytes(kb << 10)

    @DBOS.workflow()
    def build_sleep_use(steps: int, kb: int, sleep: float) -> dict:
        state = []
        for i in range(steps):
            state.append(make_chunk(i, kb))
            print(f"step {i} {time.time():.6f}", file=sys.stderr, flush=True)
        t_sleep = time.time()
        DBOS.sleep(sleep)
        t_back = time.time()
        return {"t_sleep": t_sleep, "t_back": t_back, "sha256": hashlib.sha256(b"".join(state)).hexdigest()}

    @DBOS.step()
    def tiny(i: int) -> int:
        return i

    @DBOS.workflow()
    def many_steps(steps: int) -> float:
        t = time.perf_counter()
        for i in range(steps):
            tiny(i)
        return (time.perf_counter() - t) / steps * 1000

    DBOS.launch()  # recovers any workflow of this app left pending (mode "recover")
    if mode == "state":
        steps, kb, sleep = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        out = build_sleep_use(steps, kb, sleep)
        print(json.dumps(out), flush=True)
    elif mode == "recover":
        while True:  # the recovered workflow runs on DBOS's threads; the caller ends this process
            time.sleep(1)
    elif mode == "overhead":
        print(json.dumps({"per_step_ms": many_steps(int(sys.argv[3]))}), flush=True)
    DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
