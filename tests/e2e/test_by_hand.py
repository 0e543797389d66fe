"""docs/operations.md, "A coordinator and two agents by hand", followed command by command.

Real Postgres (an empty database), a real S3 server (MinIO) as the store, one
coordinator and two agent processes started exactly as the docs say, then a
run that waits (its snapshot goes to S3) and a run that moves to the other
agent when its host dies.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import psycopg

from e2e_support import CLI, PROJECT, Procs, _need_stack, runc_ids
from helpers import assert_eventually, free_port


def test_coordinator_and_two_agents_by_hand(empty_postgres_url, s3_target, work):
    _need_stack()
    procs = Procs(work)
    server = s3_target.server
    env = {**os.environ, "TORPOR_DB": empty_postgres_url, "TORPOR_S3_ENDPOINT": server.endpoint,
           "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
           "AWS_REGION": server.region or "us-east-1"}
    store = s3_target.url

    def cli(*args: str) -> str:
        proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"torpor {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    try:
        # 2. Schema and keys.
        cli("migrate")
        api_key = json.loads(cli("keys", "create", "--kind", "client", "--name", "ops", "--json"))["secret"]
        join = json.loads(cli("keys", "create", "--kind", "agent", "--name", "workers", "--json"))["secret"]
        # 4. Coordinator.
        port = free_port()
        procs.start("coordinator", ["coordinator", "--db", empty_postgres_url, "--listen", f"127.0.0.1:{port}",
                                    "--store", store, "--lease", "6", "--heartbeat", "1"], env)
        assert_eventually(lambda: "listening on" in procs.log("coordinator"), timeout=60)
        # 5. Agents.
        states = {}
        for name in ("a1", "a2"):
            states[name] = work / name
            procs.start(name, ["agent", "--coordinator", f"127.0.0.1:{port}", "--join-token", join, "--name", name,
                               "--store", store, "--slots", "2", "--state-dir", str(states[name]),
                               "--suspend-threshold", "2"], env)
        # 6. Deploy and trigger.
        env.update(TORPOR_ADDRESS=f"127.0.0.1:{port}", TORPOR_API_KEY=api_key)
        assert_eventually(lambda: [a["name"] for a in json.loads(cli("agents", "list", "--json")) if a["alive"]]
                          == ["a1", "a2"], timeout=60)
        cli("deploy", str(PROJECT))

        def show(run_id: str) -> dict:
            return json.loads(cli("runs", "show", run_id, "--json"))

        # A wait: the snapshot goes to S3 and comes back.
        waiting = json.loads(cli("trigger", "big-state", "--payload", '{"mb": 10, "seconds": 6}', "--json"))["id"]
        suspended = assert_eventually(lambda: (r := show(waiting))["status"] == "SUSPENDED" and r, timeout=60)
        location = suspended["checkpoints"][-1]["location"]
        assert any(k.endswith(location) for k in s3_target.raw_keys())
        # No key file given: sealed under the key the coordinator generated and keeps in Postgres.
        with psycopg.connect(empty_postgres_url) as conn:
            (generated,) = conn.execute("SELECT id FROM snapshot_key").fetchone()
        assert suspended["checkpoints"][-1]["key_id"] == generated
        # A run checkpointed every second, whose host is about to die.
        moving = json.loads(cli("trigger", "steady", "--payload", '{"steps": 48}', "--json"))["id"]
        run = assert_eventually(lambda: (r := show(moving))["status"] == "RUNNING" and len(r["checkpoints"]) >= 2 and r,
                                timeout=60)
        victim = run["agent"]
        killed_at = time.time()
        procs.procs[victim].kill()  # the agent dies with its host ...
        for cid in runc_ids(states[victim]):  # ... and so do its containers
            subprocess.run(["runc", "--root", str(states[victim] / "runc"), "delete", "-f", cid], check=True)

        done = assert_eventually(lambda: (r := show(waiting))["status"] in ("COMPLETED", "FAILED") and r, timeout=90)
        assert done["status"] == "COMPLETED" and done["output"]["before"] == done["output"]["after"], done

        moved = assert_eventually(lambda: (r := show(moving))["status"] in ("COMPLETED", "FAILED", "CRASHED") and r,
                                  timeout=120)
        assert moved["status"] == "COMPLETED", moved
        assert moved["output"]["started"] < killed_at and moved["output"]["attempt"] == 1
        restored = [e for e in moved["events"] if e["type"] == "restored"]
        assert restored and restored[-1]["agent"] != victim
        human = cli("runs", "show", moving)
        assert f"[{victim}]" in human and f"[{restored[-1]['agent']}]" in human  # the timeline names both hosts
    finally:
        procs.stop()
        for state in (work / "a1", work / "a2"):
            for cid in runc_ids(state):
                subprocess.run(["runc", "--root", str(state / "runc"), "delete", "-f", cid])
