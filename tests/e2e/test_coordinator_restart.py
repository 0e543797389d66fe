"""The coordinator restarts while runs are going and waiting: nothing is lost.

All state is in Postgres; the agent reconnects with backoff and reports the
runs it holds; a run that suspended meanwhile resumes when its wait is over.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from e2e_support import CLI, PROJECT, Procs, _need_stack, runc_ids
from helpers import assert_eventually, free_port


def test_runs_survive_a_coordinator_restart(empty_postgres_url, work):
    _need_stack()
    procs = Procs(work)
    store = f"file://{work}/store"
    env = {**os.environ, "TORPOR_DB": empty_postgres_url}

    def cli(*args: str) -> str:
        proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"torpor {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    port = free_port()
    coord_args = ["coordinator", "--db", empty_postgres_url, "--listen", f"127.0.0.1:{port}", "--store", store,
                  "--lease", "10", "--heartbeat", "1"]
    try:
        cli("migrate")
        api_key = json.loads(cli("keys", "create", "--kind", "client", "--json"))["secret"]
        join = json.loads(cli("keys", "create", "--kind", "agent", "--json"))["secret"]
        procs.start("coordinator", coord_args, env)
        assert_eventually(lambda: "listening on" in procs.log("coordinator"), timeout=60)
        procs.start("agent", ["agent", "--coordinator", f"127.0.0.1:{port}", "--join-token", join, "--name", "solo",
                              "--store", store, "--state-dir", str(work / "solo"), "--suspend-threshold", "2"], env)
        env.update(TORPOR_ADDRESS=f"127.0.0.1:{port}", TORPOR_API_KEY=api_key)
        assert_eventually(lambda: any(a["alive"] for a in json.loads(cli("agents", "list", "--json"))), timeout=60)
        cli("deploy", str(PROJECT))

        def show(run_id: str) -> dict:
            return json.loads(cli("runs", "show", run_id, "--json"))

        busy = json.loads(cli("trigger", "busy", "--payload", '{"seconds": 6}', "--json"))["id"]
        sleeper = json.loads(cli("trigger", "big-state", "--payload", '{"mb": 4, "seconds": 5}', "--json"))["id"]
        assert_eventually(lambda: show(busy)["status"] == "RUNNING" and show(sleeper)["status"] == "SUSPENDED",
                          timeout=60)

        coord = procs.procs.pop("coordinator")
        coord.terminate()
        coord.wait(timeout=30)
        time.sleep(2)  # the agent is on its own; its run goes on
        procs.start("coordinator2", coord_args, env)

        for run_id in (busy, sleeper):
            done = assert_eventually(lambda: (r := show(run_id))["status"] in ("COMPLETED", "FAILED", "CRASHED") and r,
                                     timeout=90)
            assert done["status"] == "COMPLETED", done
            assert done["attempts"][-1]["number"] == 1  # no retry, no restart
        assert show(busy)["output"] == "done"
        assert runc_ids(work / "solo") == []
    finally:
        procs.stop()
        for cid in runc_ids(work / "solo"):
            subprocess.run(["runc", "--root", str(work / "solo" / "runc"), "delete", "-f", cid])
