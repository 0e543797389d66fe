"""One fault stack: network, Postgres, MinIO, coordinators, agent hosts, the workload deployed, a client.

Everything it starts is recorded as it starts, and ``close()`` removes it in
reverse order even after a failure half-way through: agents (processes by
pid, containers by id, cgroups), coordinators, MinIO, Postgres, the
namespaces and the bridge, tmpfs mounts, the work directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from harness_agents import AgentHost
from harness_net import Network
from harness_services import Coordinators, Minio, Postgres
from helpers import assert_eventually, free_port

from torpor import RPCError
from torpor._proto.v1 import common_pb2

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parent / "project"
PYTHON = sys.executable
TERMINAL = {"COMPLETED", "FAILED", "CANCELED", "TIMED_OUT", "CRASHED"}
UNFINISHED = ["QUEUED", "STARTING", "RUNNING", "SUSPENDING", "SUSPENDED", "RESTORING", "RETRY_WAIT"]


def status_name(run: common_pb2.Run) -> str:
    return common_pb2.RunStatus.Name(run.status)


class Stack:
    def __init__(self, *, lease: float = 3.0, heartbeat: float = 1.0, suspend_threshold: float = 2.0) -> None:
        self.lease = lease
        self.heartbeat = heartbeat
        self.suspend_threshold = suspend_threshold
        self.work = Path(tempfile.mkdtemp(prefix="torpor-faults-", dir="/var/tmp"))
        os.chmod(self.work, 0o711)  # the task user must traverse agent state directories below
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.net = Network()
        self.postgres = Postgres(self.work / "pg")
        self.minio: Minio | None = None
        self.coords: Coordinators | None = None
        self.agents: dict[str, AgentHost] = {}
        self.mounts: list[Path] = []
        self.dbname = "torpor_faults"
        self.bucket = f"faults-{self.net.tag}"
        self.ledger_port = 7000 + secrets.randbelow(2000)
        self.port = 0
        self.default_slots: dict[str, int] = {}
        self._client: Any = None
        self._s3: Any = None

    # -- start ---------------------------------------------------------------------

    def start(self, agents: dict[str, int]) -> None:
        """Start everything; ``agents`` maps each agent's name to its slots (runs go where most slots are free)."""
        t0 = time.monotonic()
        self.net.create()
        self.postgres.init()
        self.postgres.start()
        db_url = self.postgres.create_db(self.dbname)
        self.minio = Minio(self.work / "minio", self.net.gateway)
        self.minio.start()
        self.s3().create_bucket(Bucket=self.bucket)
        self.port = free_port()
        self.coords = Coordinators(self.work, db_url=db_url, listen=f"{self.net.gateway}:{self.port}",
                                   store_url=self.store_url, env=self.minio.env(), lease=self.lease,
                                   heartbeat=self.heartbeat, orphan_grace=2 * self.lease + 1)
        self.coords.start("c1")
        self.default_slots = dict(agents)
        for name, slots in agents.items():
            self.add_agent(name).start(slots=slots)
        for a in self.agents.values():
            a.wait_registered()
        self.deploy()
        log.info("fault stack up in %.1fs: %s", time.monotonic() - t0, self.work)

    @property
    def store_url(self) -> str:
        return f"s3://{self.bucket}/store"

    @property
    def address(self) -> str:
        return f"{self.net.gateway}:{self.port}"

    def add_agent(self, name: str) -> AgentHost:
        assert self.coords is not None and self.minio is not None
        host = self.net.add_host(name)
        base_args = ["--coordinator", self.address, "--join-token-file", str(self.coords.join_token_file),
                     "--store", self.store_url, "--suspend-threshold", str(self.suspend_threshold)]
        agent = AgentHost(host, state_dir=self.work / "hosts" / name, logs=self.logs, python=PYTHON,
                          ledger_port=self.ledger_port, base_args=base_args, env={**os.environ, **self.minio.env()})
        self.agents[name] = agent
        agent.start_ledger()
        return agent

    def deploy(self) -> None:
        assert self.coords is not None
        env = {**os.environ, "TORPOR_ADDRESS": self.address, "TORPOR_API_KEY": self.coords.api_key}
        out = subprocess.run([PYTHON, "-m", "torpor.cli", "deploy", str(PROJECT), "--json"], env=env,
                             check=False, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"deploy failed: {out.stdout}{out.stderr}"

    def small_tmpfs(self, name: str, size: str) -> Path:
        """A tmpfs of ``size`` (e.g. "24m") under the work directory; unmounted by close()."""
        path = self.work / "tmpfs" / name
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(path)], check=True)
        self.mounts.append(path)
        return path

    def restart_agent(self, name: str, **options: Any) -> AgentHost:
        """Stop the agent as a crash would (containers too), start it again with ``options``; wait until it is in."""
        agent = self.agents[name]
        agent.reap()
        agent.start(**options)
        agent.wait_registered()
        return agent

    def repair(self) -> None:
        """Bring the stack back to its normal shape after a scenario, whatever it did (or failed to undo).

        Postgres thawed and running, MinIO running, one coordinator (c1), every namespace reachable, every
        agent running with its usual slots and no fault point or tmpfs, no run left unfinished.
        """
        assert self.coords is not None and self.minio is not None
        self.postgres.thaw()
        if self.postgres.proc is None or not self.postgres.proc.alive:
            self.postgres.start()
        if self.minio.proc is None or not self.minio.proc.alive:
            self.minio.start()
        for name, proc in self.coords.procs.items():
            if name != "c1":
                proc.stop()
        if not self.coords.procs["c1"].alive:
            self.coords.start("c1")
        for a in self.agents.values():
            if a.host.partitioned:
                self.net.heal(a.host)
                self.net.link_up(a.host)
        restarted = []
        for name, a in self.agents.items():
            if a.paused:
                a.resume()
            normal = a.slots == self.default_slots[name] and not a.faults and a.image_dir is None
            if not (a.alive and normal):
                a.reap()
                a.start(slots=self.default_slots[name], faults="", image_dir=None)
                restarted.append(a)
        for a in restarted:
            a.wait_registered()
        self.cancel_unfinished()
        self.wait_fleet_idle()
        wedged = self.unschedulable(wait=2 * self.lease)
        for name in wedged:  # a product bug kept it out of work (the scenario that caused it reports that)
            log.warning("agent %s is alive but given no work; restarting it for the next scenario", name)
            self.restart_agent(name)
        if wedged:
            self.wait_fleet_idle()

    def cancel_unfinished(self) -> None:
        """Cancel the runs a failed scenario left behind (stuck, or still going), so the next one starts clean."""
        left = self.retrying(lambda: self.client().list_runs(status=UNFINISHED, page_size=1000)).runs
        for run in left:
            log.warning("canceling run %s, left %s by the last scenario", run.id, status_name(run))
            try:
                self.client().cancel_run(run.id)
            except RPCError:
                pass  # finished meanwhile

    def unschedulable(self, wait: float) -> list[str]:
        """Agents the scheduler would not place work on (not alive, or no coordinator holding their stream)."""
        deadline = time.monotonic() + wait
        while True:
            rows = self.postgres.query(self.dbname, "SELECT name, alive, coordinator_id FROM agents")
            bad = sorted(r["name"] for r in rows if r["name"] in self.agents and not (r["alive"] and r["coordinator_id"]))
            if not bad or time.monotonic() > deadline:
                return bad
            time.sleep(0.1)

    def given_work(self, name: str, timeout: float) -> list[str]:
        """Trigger one-step probe runs until one is placed on agent ``name`` (the agent with most free slots).

        Returns every probe's run id; fails if none landed there within ``timeout``.
        """
        probes: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            probes.append(self.trigger("counter", steps=1, pause=0.0))
            run = self.wait_run(probes[-1], lambda r: bool(r.agent) or status_name(r) in TERMINAL, "placed")
            if run.agent == name or any(e.agent == name for e in run.events if e.type == "starting"):
                return probes
            if time.monotonic() > deadline:
                where = sorted({self.run(p).agent for p in probes})
                row = self.postgres.query(self.dbname, "SELECT alive, coordinator_id, lease_expires_at, now() AS now"
                                          " FROM agents WHERE name = %s", name)
                raise AssertionError(f"agent {name} was given no work for {timeout:.0f}s after it came back: "
                                     f"{len(probes)} probe runs went to {where}; ListAgents says alive="
                                     f"{[a.alive for a in self.client().list_agents() if a.name == name]}; "
                                     f"its agents row: {row}")
            time.sleep(1.0)

    def wait_fleet_idle(self, timeout: float = 30.0) -> None:
        """Every agent alive in the coordinator's eyes, and holding no run."""
        def idle() -> bool:
            try:
                agents = {a.name: a for a in self.client().list_agents()}
            except RPCError:
                return False
            return all(n in agents and agents[n].alive and agents[n].slots_used == 0 for n in self.agents)
        assert_eventually(idle, timeout=timeout, interval=0.1, msg="the agents did not all come back idle")

    # -- client -------------------------------------------------------------------------

    def client(self):  # type: ignore[no-untyped-def]
        from torpor.client import Client

        assert self.coords is not None
        if self._client is None:
            self._client = Client(self.address, api_key=self.coords.api_key, timeout=5.0)
        return self._client

    def trigger(self, task: str, **payload: Any) -> str:
        resp = self.retrying(lambda: self.client().trigger(task, {"ledger": self.ledger_port, **payload}))
        return resp.run_id

    def retrying(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Call ``fn`` through coordinator and database outages."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except RPCError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def run(self, run_id: str) -> common_pb2.Run:
        return self.retrying(lambda: self.client().get_run(run_id))

    def wait_run(self, run_id: str, pred: Callable[[common_pb2.Run], bool], what: str,
                 timeout: float = 30.0) -> common_pb2.Run:
        last: dict[str, common_pb2.Run] = {}

        def check() -> common_pb2.Run | None:
            try:
                run = self.client().get_run(run_id)
            except RPCError:
                return None
            last["run"] = run
            return run if pred(run) else None

        try:
            return assert_eventually(check, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(f"run {run_id} never got {what}; it is:\n{describe(last.get('run'))}") from None

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 30.0) -> common_pb2.Run:
        return self.wait_run(run_id, lambda r: status_name(r) in statuses, f"to {'/'.join(statuses)}", timeout)

    def ledger_files(self) -> list[Path]:
        return [a.ledger_file for a in self.agents.values()]

    # -- the store ------------------------------------------------------------------------

    def s3(self) -> Any:
        """A boto3 client of the store (made once: making one takes a tenth of a second)."""
        assert self.minio is not None
        if self._s3 is None:
            self._s3 = self.minio.server.client()
        return self._s3

    def store_keys(self, prefix: str = "store/runs/") -> list[str]:
        s3 = self.s3()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", ())]

    def multipart_uploads(self, prefix: str = "store/runs/") -> list[str]:
        s3 = self.s3()
        pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket)
        return [u["Key"] for page in pages for u in page.get("Uploads", ()) if u["Key"].startswith(prefix)]

    # -- clean-up ------------------------------------------------------------------------

    def close(self) -> None:
        errors: list[str] = []

        def step(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - every step runs; failures are reported at the end
                errors.append(f"{what}: {exc!r}")

        if self._client is not None:
            step("client", self._client.close)
        step("postgres thaw", self.postgres.thaw)
        for a in self.agents.values():
            step(f"agent {a.name}", a.close)
        if self.coords is not None:
            step("coordinators", self.coords.stop_all)
        if self.minio is not None:
            step("minio", self.minio.stop)
        step("postgres", self.postgres.stop)
        step("network", self.net.close)
        step("network leftovers", partial(assert_eventually, lambda: not self.net.leftovers(), timeout=10,
                                          msg="links or namespaces of the session still there"))
        for m in reversed(self.mounts):
            step(f"umount {m}", partial(subprocess.run, ["umount", str(m)], check=True))
        if not errors and os.environ.get("TORPOR_FAULTS_KEEP") != "1":
            shutil.rmtree(self.work, ignore_errors=True)
        if errors:
            raise RuntimeError("fault stack clean-up failed: " + "; ".join(errors) + f" (work dir kept: {self.work})")


def describe(run: common_pb2.Run | None) -> str:
    """A run as a reader of a failure wants it: status, attempt, agent, events, error."""
    if run is None:
        return "(never read)"
    lines = [f"  {run.id} {status_name(run)} attempt {run.attempt} generation {run.generation} agent {run.agent!r}"]
    for e in run.events:
        lines.append(f"    {e.time.ToDatetime():%H:%M:%S.%f} {e.type:<18} {e.agent:<4} {e.detail}")
    if run.error:
        lines.append(f"  error: {run.error}")
    if run.output_json:
        out = json.loads(run.output_json)
        if isinstance(out, dict) and "steps" in out:
            out = {**out, "steps": f"{len(out['steps'])} steps"}
        lines.append(f"  output: {out}")
    return "\n".join(lines)
