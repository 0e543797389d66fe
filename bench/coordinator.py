"""Coordinator benchmark; prints JSON.

1. Trigger throughput: 8 client threads call Trigger for 30 s against a
   coordinator process (runs accepted per second, sustained).
2. Scheduling latency: with a connected agent that has free slots (it reports
   each run started and finished at once), the time from a trigger being
   accepted to the StartRun command arriving at the agent; p50/p99.

Usage: .venv/bin/python bench/coordinator.py [--db URL] [--seconds 30] [--threads 8] [--samples 1000]
Without --db it starts a private PostgreSQL (Debian's binaries, as the tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from torpor._proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2  # noqa: E402
from torpor.client import Client  # noqa: E402

KEY, TOKEN = "tpk_bench_client", "tpj_bench_agent"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _database(url: str | None, durable: bool) -> Iterator[str]:
    if url:
        yield url
        return
    from fixtures.postgres import private_cluster

    with private_cluster(durable=durable) as server:
        yield server.url("postgres")


def _fresh_db(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def _coordinator(db_url: str, tmp: Path) -> Iterator[str]:
    (tmp / "keys").write_text(KEY + "\n")
    (tmp / "tokens").write_text(TOKEN + "\n")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "torpor.cli", "coordinator", "--db", db_url, "--listen", f"127.0.0.1:{port}",
         "--api-key-file", str(tmp / "keys"), "--join-token-file", str(tmp / "tokens")],
        stdout=subprocess.DEVNULL, stderr=open(tmp / f"coordinator-{port}.log", "wb"),
    )
    address = f"127.0.0.1:{port}"
    try:
        with Client(address, api_key=KEY, timeout=2) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c.list_agents()
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((tmp / f"coordinator-{port}.log").read_text())
                    time.sleep(0.1)
            c.deploy("bench-v1", [common_pb2.TaskSettings(id="bench", module="bench", function="bench")],
                     project="bench", bundle_location="deployments/bench-v1/bundle.tar.zst")
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def throughput(address: str, seconds: float, threads: int) -> dict[str, float]:
    counts = [0] * threads
    errors = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with Client(address, api_key=KEY) as c:
            n = 0
            while time.monotonic() < stop:
                try:
                    c.trigger("bench", {"i": n, "worker": i}, tags=["bench"])
                    counts[i] += 1
                except Exception:
                    errors[i] += 1
                n += 1

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    return {"triggers": sum(counts), "errors": sum(errors), "seconds": round(elapsed, 2),
            "triggers_per_second": round(sum(counts) / elapsed, 1)}


class _Agent:
    """Reports each run started and finished as soon as its StartRun arrives; notes when it arrived."""

    def __init__(self, address: str, slots: int) -> None:
        self.arrived: dict[str, float] = {}
        self._out: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
        self._channel = grpc.insecure_channel(address)
        self._slots = slots
        self.ready = threading.Event()

    def _requests(self) -> Iterator[agent_pb2.AgentMessage]:
        yield agent_pb2.AgentMessage(register=agent_pb2.Register(name="bench-agent", slots=self._slots))
        while (msg := self._out.get()) is not None:
            yield msg

    def start(self) -> None:
        call = agent_pb2_grpc.AgentChannelStub(self._channel).Connect(
            self._requests(), metadata=(("authorization", f"Bearer {TOKEN}"),))
        self._call = call

        def read() -> None:
            with contextlib.suppress(Exception):  # the stream is cancelled at the end
                self._read(call)

        threading.Thread(target=read, daemon=True).start()

        def beat() -> None:
            while self._call.is_active():
                self._out.put(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))
                time.sleep(2)

        threading.Thread(target=beat, daemon=True).start()
        self.ready.wait(10)

    def _read(self, call: Iterator[agent_pb2.CoordinatorMessage]) -> None:
        for msg in call:
            now = time.perf_counter()
            if msg.WhichOneof("msg") == "registered":
                self.ready.set()
            elif msg.WhichOneof("msg") == "start":
                ref = msg.start.spec.run
                self.arrived[ref.run_id] = now
                self._out.put(agent_pb2.AgentMessage(run_started=agent_pb2.RunStarted(run=ref)))
                self._out.put(agent_pb2.AgentMessage(run_exited=agent_pb2.RunExited(
                    run=ref, has_result=True, output_json="null")))

    def close(self) -> None:
        self._out.put(None)
        self._call.cancel()
        self._channel.close()


def latency(address: str, samples: int, rate: float) -> dict[str, float]:
    agent = _Agent(address, slots=64)
    agent.start()
    accepted: dict[str, float] = {}
    requested: dict[str, float] = {}
    with Client(address, api_key=KEY) as c:
        for i in range(50):  # warm up connections and plans
            c.trigger("bench", i)
        time.sleep(1.0)
        for i in range(samples):
            t0 = time.perf_counter()
            run_id = c.trigger("bench", {"i": i}).run_id
            accepted[run_id] = time.perf_counter()
            requested[run_id] = t0
            time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))
        deadline = time.monotonic() + 10
        while any(r not in agent.arrived for r in accepted) and time.monotonic() < deadline:
            time.sleep(0.05)
    agent.close()
    got = [r for r in accepted if r in agent.arrived]
    from_accept = sorted(max(0.0, agent.arrived[r] - accepted[r]) * 1000 for r in got)
    from_request = sorted((agent.arrived[r] - requested[r]) * 1000 for r in got)

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 2)

    return {"samples": len(got), "missing": samples - len(got), "rate_per_second": rate,
            "p50_ms": pct(from_accept, 50), "p99_ms": pct(from_accept, 99), "max_ms": round(from_accept[-1], 2),
            "mean_ms": round(statistics.fmean(from_accept), 2),
            "from_request_p50_ms": pct(from_request, 50), "from_request_p99_ms": pct(from_request, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="admin URL of a PostgreSQL server (default: start a private one)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="triggers per second in the latency phase")
    parser.add_argument("--fast-db", action="store_true",
                        help="private PostgreSQL without fsync/synchronous_commit (as the tests run it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torpor-bench-") as tmp, _database(args.db, not args.fast_db) as admin:
        result: dict[str, object] = {"cpus": os.cpu_count(),
                                     "postgres": "given" if args.db else ("fast" if args.fast_db else "durable")}
        with _coordinator(_fresh_db(admin, "torpor_bench_throughput"), Path(tmp)) as address:
            result["trigger_throughput"] = {"threads": args.threads, **throughput(address, args.seconds, args.threads)}
        with _coordinator(_fresh_db(admin, "torpor_bench_latency"), Path(tmp)) as address:
            result["scheduling_latency"] = latency(address, args.samples, args.rate)
        result["targets"] = {"triggers_per_second": 500, "p99_ms": 50}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
