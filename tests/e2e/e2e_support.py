"""A real `torpor dev` stack (Postgres, coordinator, agents, runc, CRIU) and helpers to drive it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import assert_eventually, free_port, need, need_root

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "project"


class Stack:
    def __init__(self, data_dir: Path, port: int, agents: int) -> None:
        self.dir = data_dir
        self.port = port
        self.agents = [f"dev-agent-{i + 1}" for i in range(agents)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self._client = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        (self.dir / "client.env").unlink(missing_ok=True)  # from an earlier start of the same directory
        log = open(self.dir.parent / f"{self.dir.name}.dev.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torpor.cli", "dev", "--data-dir", str(self.dir), "--port", str(self.port),
             "--agents", str(len(self.agents)), *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
        log.close()
        env_file = self.dir / "client.env"
        assert_eventually(lambda: env_file.exists() or self._dead(), timeout=120, msg="torpor dev did not start")
        assert self.proc.poll() is None, self.dev_log()
        self.env = dict(line.split("=", 1) for line in env_file.read_text().split())
        assert_eventually(lambda: len([a for a in self.client().list_agents() if a.alive]) == len(self.agents),
                          timeout=60, msg="agents did not register")

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def dev_log(self) -> str:
        return (self.dir.parent / f"{self.dir.name}.dev.log").read_text(errors="replace")[-3000:]

    def client(self):  # type: ignore[no-untyped-def]
        from torpor.client import Client

        if self._client is None:
            self._client = Client(self.env["TORPOR_ADDRESS"], api_key=self.env["TORPOR_API_KEY"])
        return self._client

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "torpor.cli", *args], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"torpor {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def agent_state(self, name: str) -> Path:
        return self.dir / "agents" / name

    def runc_list(self, name: str) -> list[dict[str, Any]]:
        return runc_list_at(self.agent_state(name), check=True)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for name in self.agents:  # nothing may be left behind, by id
            root = self.agent_state(name) / "runc"
            if root.exists():
                for c in self.runc_list(name):
                    subprocess.run(["runc", "--root", str(root), "delete", "-f", c["id"]], check=False)


def _need_stack() -> None:
    need_root()
    need(shutil.which("runc") is not None, "needs runc")
    need(Path("/opt/torpor/bin/criu").exists() or shutil.which("criu") is not None, "needs CRIU >= 4.2 (make criu)")
    need(any(Path("/usr/lib/postgresql").glob("*/bin/postgres")), "needs PostgreSQL (apt-get install postgresql)")


def make_stack(agents: int, *args: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    _need_stack()
    d = Path(tempfile.mkdtemp(prefix="torpor-e2e-", dir="/var/tmp"))
    os.chmod(d, 0o711)
    stack = Stack(d / "data", free_port(), agents)
    try:
        stack.start(*args, env=env)
        stack.cli("deploy", str(PROJECT))
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from make_stack(1, "--slots", "4", "--suspend-threshold", "3")


def wait_status(stack: Stack, run_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        run = stack.cli_json("runs", "show", run_id)
        last["run"] = run
        return run if run["status"] in statuses else None

    try:
        return assert_eventually(check, timeout=timeout, interval=0.3)
    except AssertionError:
        run = last.get("run", {})
        events = "\n".join(f"  {e['time']} {e['type']} {e['detail']}" for e in run.get("events", []))
        logs = stack.cli("runs", "logs", run_id, check=False).stdout[-2000:]
        raise AssertionError(f"run {run_id} never reached {statuses}; it is {run.get('status')}:\n{events}\n"
                             f"error: {run.get('error')}\nlogs:\n{logs}") from None


def trigger(stack: Stack, task: str, payload: Any) -> str:
    out = stack.cli_json("trigger", task, "--payload", json.dumps(payload))
    return out["run_id"] if "run_id" in out else out["id"]


CLI = [sys.executable, "-m", "torpor.cli"]


class Procs:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen([*CLI, *args], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def runc_list_at(state: Path, *, check: bool = False) -> list[dict[str, Any]]:
    """Containers in an agent's runc root (STATE/runc); [] when it does not exist, unless ``check``."""
    out = subprocess.run(["runc", "--root", str(state / "runc"), "list", "--format", "json"], capture_output=True,
                         text=True, check=check)
    return json.loads(out.stdout or "null") or [] if out.returncode == 0 else []


def runc_ids(state: Path) -> list[str]:
    return [c["id"] for c in runc_list_at(state)]


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="torpor-hand-", dir="/var/tmp"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)
