"""The shared services of a fault stack: Postgres, MinIO and coordinators, each one we can freeze, kill and restart.

Postgres listens on the host's loopback only (only coordinators use it).
MinIO and the coordinators listen on the bridge's address, where the agents'
namespaces reach them. Every coordinator of a stack binds the same address
and port: gRPC servers set SO_REUSEPORT, so the kernel spreads connections
over the live ones, as a TCP load balancer in front of them would, and an
agent whose coordinator died lands on the other one when it reconnects.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from fixtures.minio import S3Server, minio_binary
from fixtures.postgres import PG_BIN, _as_postgres, _wait_ready
from harness_procs import Proc
from helpers import assert_eventually, free_port

PYTHON = sys.executable


class Postgres:
    """A private cluster on 127.0.0.1 whose process tree the harness owns."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.proc: Proc | None = None
        self.frozen = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        for d in (self.base, self.data, self.sock):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for d in (self.base, self.data, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        import subprocess

        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                     "-E", "UTF8", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.base)

    def start(self) -> None:
        cmd = _as_postgres([str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sock),
                            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                            # fsync off: only Postgres crashes here, never the machine. synchronous_commit stays on:
                            # off, an immediate shutdown loses commits already acknowledged to the coordinator.
                            "-c", "fsync=off", "-c", "full_page_writes=off"])
        self.proc = Proc("postgres", cmd, log_path=self.base / "postgres.log", cwd=self.base)

        class _Server:  # what _wait_ready needs
            url = self.url

        _wait_ready(_Server(), self.proc.popen, self.proc.log_path)  # type: ignore[arg-type]

    def create_db(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: connections stay open and nothing answers."""
        assert self.proc is not None
        self.frozen = True
        self.proc.signal_tree(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.signal_tree(signal.SIGCONT)
        self.frozen = False

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): every backend ends at once, crash recovery at the next start."""
        assert self.proc is not None
        self.thaw()
        self.proc.signal(signal.SIGQUIT)
        self.proc.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.thaw()
        if self.proc.alive:
            self.proc.signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.popen.wait(timeout=20)
            except Exception:  # noqa: BLE001 - last resort, by pid
                self.proc.kill()

    def query(self, dbname: str, sql: str, *args: Any) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5, row_factory=dict_row) as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


class Minio:
    """MinIO on the bridge address with fixed credentials and data, so a restart is the same server."""

    def __init__(self, base: Path, address: str) -> None:
        self.base = base
        self.address = address
        self.port = free_port()
        self.user = f"faults-{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(24)
        self.proc: Proc | None = None
        binary = minio_binary()
        assert binary is not None
        self.binary = binary

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def server(self) -> S3Server:
        return S3Server(endpoint=self.endpoint, access_key=self.user, secret_key=self.password, region="us-east-1")

    def env(self) -> dict[str, str]:
        """What torpor's CLI (agents, coordinators) reads to reach this store."""
        return {"TORPOR_S3_ENDPOINT": self.endpoint, "TORPOR_S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": self.user, "AWS_SECRET_ACCESS_KEY": self.password}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
        env |= {"MINIO_ROOT_USER": self.user, "MINIO_ROOT_PASSWORD": self.password, "MINIO_UPDATE": "off"}
        self.proc = Proc("minio", [self.binary, "server", str(self.base / "data"), "--address",
                                   f"{self.address}:{self.port}", "--console-address", f"127.0.0.1:{free_port()}",
                                   "--quiet"], log_path=self.base / "minio.log", env=env)
        assert_eventually(self._ready, timeout=60, interval=0.1, msg="MinIO did not become ready")

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.alive, f"MinIO exited:\n{self.proc.tail() if self.proc else ''}"
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Coordinators:
    """``torpor coordinator`` processes sharing one database and one listening address."""

    def __init__(self, base: Path, *, db_url: str, listen: str, store_url: str, env: dict[str, str],
                 lease: float, heartbeat: float, orphan_grace: float) -> None:
        self.base = base
        self.db_url = db_url
        self.listen = listen
        self.store_url = store_url
        self.env = env
        self.lease = lease
        self.heartbeat = heartbeat
        self.orphan_grace = orphan_grace
        self.api_key = "tfk-" + secrets.token_urlsafe(18)
        self.join_token = "tfj-" + secrets.token_urlsafe(18)
        (base / "api-keys").write_text(self.api_key + "\n")
        self.join_token_file = base / "join-tokens"
        self.join_token_file.write_text(self.join_token + "\n")
        self.procs: dict[str, Proc] = {}
        self._starts = 0

    def start(self, name: str) -> Proc:
        old = self.procs.get(name)
        assert old is None or not old.alive, f"coordinator {name} is running"
        self._starts += 1
        cmd = [PYTHON, "-m", "torpor.cli", "-v", "coordinator", "--db", self.db_url, "--listen", self.listen,
               "--store", self.store_url, "--api-key-file", str(self.base / "api-keys"),
               "--join-token-file", str(self.join_token_file),
               "--lease", str(self.lease), "--heartbeat", str(self.heartbeat)]
        # The store sweeper, through the environment (a coordinator without one ignores it): snapshots no
        # checkpoint names (an agent died mid-upload, a failed dump's log) go once orphan_grace old.
        sweep = {"TORPOR_ORPHAN_SWEEP": "1", "TORPOR_ORPHAN_GRACE": str(self.orphan_grace)}
        proc = Proc(f"coordinator-{name}", cmd, log_path=self.base / f"coordinator-{name}.log",
                    env={**os.environ, **self.env, **sweep})
        self.procs[name] = proc
        proc.wait_log("listening on", timeout=60)
        return proc

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.alive]

    def holding(self, postgres: Postgres, dbname: str) -> dict[str, str]:
        """agent name -> name of the coordinator (of ours) holding its stream, from the agents table."""
        by_pid = {str(p.pid): name for name, p in self.procs.items() if p.alive}
        rows = postgres.query(dbname, "SELECT name, coordinator_id FROM agents")
        out = {}
        for r in rows:
            pid = (r["coordinator_id"] or "::").split(":")[1]
            if pid in by_pid:
                out[r["name"]] = by_pid[pid]
        return out

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.stop(timeout=15)

