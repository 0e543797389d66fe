"""make demo: start torpor dev, deploy examples/, and narrate what happens.

Exits 0 only if every example ends as expected. Everything it starts is
stopped again (containers included), and its data directory is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "torpor.cli"]
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n{BOLD}== {text}{RESET}")


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="torpor-demo-", dir="/var/tmp"))
        os.chmod(self.work, 0o711)
        self.data = self.work / "data"
        self.port = free_port()
        self.dev: subprocess.Popen[bytes] | None = None
        self.client = None
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        say(f"   {GREEN + 'ok' if ok else RED + 'FAILED'}{RESET}  {what}")
        if not ok:
            self.failures.append(what)

    # -- the stack ----------------------------------------------------------------

    def start(self) -> None:
        step("Starting the stack: torpor dev --agents 2 (Postgres, a coordinator, two agents)")
        log = open(self.work / "dev.log", "wb")
        self.dev = subprocess.Popen([*CLI, "dev", "--data-dir", str(self.data), "--port", str(self.port),
                                     "--agents", "2", "--slots", "2", "--suspend-threshold", "3"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        env_file = self.data / "client.env"
        deadline = time.monotonic() + 120
        while not env_file.exists():
            if self.dev.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"torpor dev did not start:\n{(self.work / 'dev.log').read_text()[-2000:]}")
            time.sleep(0.2)
        env = dict(line.split("=", 1) for line in env_file.read_text().split())
        os.environ.update(env)
        from torpor.client import Client

        self.client = Client(env["TORPOR_ADDRESS"], api_key=env["TORPOR_API_KEY"])
        while len([a for a in self.client.list_agents() if a.alive]) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the agents did not register")
            time.sleep(0.2)
        say((self.work / "dev.log").read_text().strip())
        step("Deploying examples/: torpor deploy examples")
        out = subprocess.run([*CLI, "deploy", str(ROOT / "examples")], capture_output=True, text=True)
        say("   " + (out.stdout or out.stderr).strip())
        if out.returncode != 0:
            raise SystemExit("deploy failed")

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.dev is not None and self.dev.poll() is None:
            self.dev.send_signal(signal.SIGINT)
            try:
                self.dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.dev.kill()
                self.dev.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------

    def trigger(self, task: str, payload: dict) -> str:
        run_id = self.client.trigger(task, payload).run_id
        say(f"   {DIM}$ torpor trigger {task} --payload '{json.dumps(payload)}'{RESET}  -> {run_id}")
        return run_id

    def run(self, run_id: str):  # type: ignore[no-untyped-def]
        from torpor.client._convert import run_dict

        return run_dict(self.client.get_run(run_id))

    def wait_for(self, run_id: str, statuses: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.run(run_id)
            if r["status"] in statuses:
                return r
            if time.monotonic() > deadline:
                self.failures.append(f"{run_id} stuck in {r['status']}")
                return r
            time.sleep(0.25)

    def runc_list(self) -> dict[str, list[dict]]:
        """Each agent's containers, from its runc root."""
        out = {}
        for agent in ("dev-agent-1", "dev-agent-2"):
            root = self.data / "agents" / agent / "runc"
            proc = subprocess.run(["runc", "--root", str(root), "list", "--format", "json"], capture_output=True, text=True)
            out[agent] = json.loads(proc.stdout or "null") or []
        return out

    def containers(self) -> dict[str, list[str]]:
        return {agent: [c["id"] for c in cs] for agent, cs in self.runc_list().items()}

    def run_rss(self, run_id: str) -> int:
        total = 0
        for cs in self.runc_list().values():
            for c in cs:
                if c["id"].startswith(run_id) and c["pid"]:
                    try:
                        p = psutil.Process(c["pid"])
                        total += sum(x.memory_info().rss for x in [p, *p.children(recursive=True)])
                    except psutil.NoSuchProcess:
                        pass
        return total

    def slots(self) -> str:
        return ", ".join(f"{a.name} {a.slots_used}/{a.slots}" for a in self.client.list_agents())

    # -- the examples ----------------------------------------------------------------

    def big_state(self) -> None:
        step("A run holding 200 MB waits 15 s: it becomes a snapshot and frees its host")
        run_id = self.trigger("big-state", {"mb": 200, "seconds": 15})
        r = self.wait_for(run_id, {"RUNNING"})
        rss, slots = 0, self.slots()
        while self.run(run_id)["status"] == "RUNNING":  # sample while it builds its 200 MB
            now = self.run_rss(run_id)
            if now >= rss:
                rss, slots = now, self.slots()
            time.sleep(0.1)
        say(f"   while running on {r['agent']}: memory held by the run up to {mb(rss)}; slots used: {slots}")
        r = self.wait_for(run_id, {"SUSPENDED"})
        ck = [c for c in r["checkpoints"] if c["kind"] == "SUSPEND"][-1]
        say(f"   SUSPENDED. Snapshot {ck['id'][:12]}: {mb(ck['size_bytes'])} stored ({mb(ck['raw_bytes'])} of CRIU images; "
            f"random bytes do not compress), dumped and uploaded in {ck['duration_ms']} ms")
        held = self.run_rss(run_id)
        conts = self.containers()
        say(f"   now: memory held by the run {mb(held)}; containers: {conts}; slots used: {self.slots()}")
        self.check(held == 0 and not any(c.startswith(run_id) for cs in conts.values() for c in cs),
                   "while it waits, no container and no process of the run exist anywhere")
        self.check(all(a.slots_used == 0 for a in self.client.list_agents()), "its slot is free again")
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        restored = [e for e in r["events"] if e["type"] == "restored"]
        say(f"   {r['status']}; restored on {restored[-1]['agent'] if restored else '?'}: {restored[-1]['detail'] if restored else ''}")
        out = r["output"] or {}
        self.check(r["status"] == "COMPLETED" and out.get("same") is True,
                   f"the 200 MB came back intact (sha256 before = after = {str(out.get('sha256_after'))[:16]}…)")

    def approval(self) -> None:
        step("Human approval: the run sleeps as a snapshot until someone completes its token")
        run_id = self.trigger("approval", {"timeout": 600})
        deadline = time.monotonic() + 60
        while not (self.run(run_id)["metadata"] or {}).get("token") and time.monotonic() < deadline:
            time.sleep(0.2)
        token = (self.run(run_id)["metadata"] or {}).get("token", "")
        r = self.wait_for(run_id, {"SUSPENDED"})
        say(f"   {r['status']}, waiting on {token}")
        say(f"   {DIM}$ torpor tokens complete {token} --data '{{\"approved\": true}}'{RESET}")
        proc = subprocess.run([*CLI, "tokens", "complete", token, "--data", '{"approved": true}'], capture_output=True, text=True)
        say("   " + (proc.stdout or proc.stderr).strip())
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        say(f"   {r['status']}: {json.dumps(r['output'])}")
        self.check(r["status"] == "COMPLETED" and (r["output"] or {}).get("approved") is True, "resumed with the approval")

    def fan_out(self) -> None:
        step("Fan-out: a parent starts four children and sleeps (holding nothing) until all finish")
        run_id = self.trigger("fan-out", {"numbers": [1, 2, 3, -4]})
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        say(f"   {r['status']}: {json.dumps(r['output'])}")
        out = r["output"] or {}
        self.check(r["status"] == "COMPLETED" and out.get("sum") == 14 and len(out.get("failed", [])) == 1,
                   "sum of the squares of 1, 2, 3, and the failed child's error reported to the parent")

    def flaky(self) -> None:
        step("Retries: a task that fails twice, then succeeds")
        run_id = self.trigger("flaky", {})
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        for a in r["attempts"]:
            say(f"   attempt {a['number']}: {a['status']}{' - ' + a['error'] if a['error'] else ''}")
        self.check(r["status"] == "COMPLETED" and len(r["attempts"]) == 3, "succeeded on attempt 3")

    def numpy_task(self) -> None:
        step("A third-party package: numpy (torpor.toml's dependencies) holds 100 MB across a snapshot")
        run_id = self.trigger("numpy-stats", {"mb": 100, "seconds": 8})
        r = self.wait_for(run_id, {"SUSPENDED"})
        say(f"   {r['status']}: numpy's array and its native libraries are in the snapshot")
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        out = r["output"] or {}
        say(f"   {r['status']}: {json.dumps(out)}")
        self.check(r["status"] == "COMPLETED" and out.get("unchanged") is True, "the array came back unchanged")

    def async_task(self) -> None:
        step("An async def task: one coroutine waits 8 s (the run becomes a snapshot), another keeps ticking")
        run_id = self.trigger("async-fetch", {"seconds": 8})
        r = self.wait_for(run_id, {"SUSPENDED"})
        say(f"   {r['status']}: the event loop and both coroutines are in the snapshot; containers: {self.containers()}")
        r = self.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED"})
        out = r["output"] or {}
        say(f"   {r['status']}: {json.dumps(out)}")
        self.check(r["status"] == "COMPLETED" and out.get("ticks_before", 0) > 0 and out.get("ticks_after", 0) >= 3,
                   "the heartbeat ticked before the suspension and again after the restore")

    def main(self) -> int:
        try:
            self.start()
            self.big_state()
            self.approval()
            self.fan_out()
            self.flaky()
            self.async_task()
            self.numpy_task()
        finally:
            step("Stopping the stack")
            self.stop()
            say("   stopped: no containers, processes or data left behind")
        if self.failures:
            say(f"\n{RED}{len(self.failures)} example(s) did not end as expected:{RESET} " + "; ".join(self.failures))
            return 1
        say(f"\n{GREEN}Every example ended as expected.{RESET} Try it yourself: README.md, \"A task\" (`torpor` is on your PATH now).")
        return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("make demo needs root (runc and CRIU): sudo make demo")
    sys.exit(Demo().main())
