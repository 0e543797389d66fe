"""``torpor dev``: Postgres, a coordinator and agents on this machine, one process each.

Everything lives in one data directory: the Postgres cluster, the file store,
the secrets, and each agent's state. Starting again with the same directory
picks up where it stopped: runs, suspended ones included, carry on.

Secrets (API key, join token, the Postgres password; _devsecrets.py) are
files of mode 0600 in DATA_DIR/secrets (0700), generated at the first start.
A new one (a snapshot key, say) is one more ``read_or_create`` in ``_secrets``
and is handed to its process as a file path, as ``--api-key-file`` is.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from torpor._devpg import DevPostgres
from torpor._devsecrets import private_dir, read_or_create, write_private
from torpor._errors import ConfigError, TorporError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DevConfig:
    data_dir: Path
    """Holds the Postgres cluster, the store, secrets and agent state."""
    port: int = 7433
    """Coordinator port on 127.0.0.1."""
    agents: int = 1
    """How many agent processes to start."""
    slots: int = 4
    """Slots of each agent."""
    store_url: str | None = None
    """Store URL; default file://DATA_DIR/store."""
    suspend_threshold: float = 5.0
    """Waits shorter than this are served in place."""
    python: str = sys.executable
    """Interpreter that runs the coordinator and agents."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Environment for the child processes (S3 credentials, for example)."""
    agent_memory: tuple[int, ...] = ()
    """Memory each agent offers to runs (agent --memory), in agent order; the last applies to the rest; () = the host's."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _traversable(path: Path) -> bool:
    """Can a user other than root reach ``path``? (Tasks run as such a user.)"""
    for p in [path, *path.parents]:
        if p.exists() and not os.stat(p).st_mode & 0o001:
            return False
    return True


LOCK = "dev.lock"


def running_pid(data_dir: Path) -> int | None:
    """The pid of the ``torpor dev`` that holds ``data_dir``, or None when none does.

    The holder keeps an flock on DATA_DIR/dev.lock (released by the kernel
    when it dies, however it dies) with its pid written inside, so a stale
    file or a reused pid never passes for a live stack.
    """
    path = data_dir / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        return None
    finally:
        os.close(fd)


def stop_running(data_dir: Path, timeout: float = 90) -> int | None:
    """SIGTERM the ``torpor dev`` holding ``data_dir`` and wait until it has stopped; its pid, or None."""
    pid = running_pid(data_dir)
    if pid is None:
        return None
    if pid > 0:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(data_dir) is not None:
        if time.monotonic() > deadline:
            raise TorporError(f"torpor dev (pid {pid}) did not stop within {timeout:.0f}s; see {data_dir}/logs/")
        time.sleep(0.1)
    return pid


class DevStack:
    def __init__(self, config: DevConfig) -> None:
        self.config = config
        self.dir = config.data_dir.resolve()
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.api_key = ""
        self.pg_port = 0
        self.notes: list[str] = []
        """What start() changed that the user should hear of (an upgrade, a mode made tighter)."""
        self._pg: DevPostgres | None = None
        self._lock_fd: int | None = None

    # -- paths --------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        return self.config.store_url or f"file://{self.dir}/store"

    def _shared_dir(self) -> Path:
        """Where what other users must reach lives: DATA_DIR itself, unless a parent of it is private.

        Tasks run as an unprivileged user that must reach the agent's bundle
        directories, and Postgres runs as ``postgres``; neither can enter a
        data dir under a private (0700) parent such as a home or a mktemp -d.
        """
        if _traversable(self.dir):
            return self.dir
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:10]
        return Path("/var/lib/torpor/dev") / digest

    def agent_state_dir(self, name: str) -> Path:
        return self._shared_dir() / "agents" / name

    @property
    def pg_data_dir(self) -> Path:
        return self._shared_dir() / "postgres"

    def agent_names(self) -> list[str]:
        return [f"dev-agent-{i + 1}" for i in range(self.config.agents)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    # -- start ----------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() != 0:
            raise ConfigError("torpor dev needs root (the agent runs runc and CRIU); run it with sudo")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        if not _port_free(self.config.port):
            self._unlock()
            raise ConfigError(f"port {self.config.port} is in use; pick another with --port")
        os.chmod(self.dir, 0o711)
        # Written again once everything is up: its presence means "ready".
        (self.dir / "client.env").unlink(missing_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        try:
            self._secrets()
            self._postgres()
            self._coordinator()
            for name in self.agent_names():
                self._agent(name)
            self._write_client_env()
        except BaseException:
            self.stop()
            raise

    def _lock(self) -> None:
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = running_pid(self.dir)
            raise ConfigError(f"torpor dev is already running on {self.dir} (pid {pid}); "
                              f"stop it with: torpor dev --stop --data-dir {self.dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _spawn(self, name: str, args: list[str], *, user: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        logf = open(self.dir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, **self.config.extra_env, **(env or {})}, start_new_session=True,
                                user=user, group=user, extra_groups=[] if user else None)
        logf.close()
        self.procs.append((name, proc))
        return proc

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    def _secrets(self) -> None:
        private_dir(self.secrets_dir, self.notes)
        for fname in ("api-keys", "join-tokens"):
            read_or_create(self.secrets_dir / fname, lambda: f"tp_{secrets.token_urlsafe(32)}", self.notes)
        # So that `torpor snapshots fetch --key-file` can open this stack's snapshots.
        read_or_create(self.secrets_dir / "snapshot-key", lambda: secrets.token_bytes(32).hex(), self.notes)
        self.api_key = (self.secrets_dir / "api-keys").read_text().split()[0]

    def _postgres(self) -> None:
        self.pg_data_dir.parent.mkdir(parents=True, exist_ok=True)
        pg = self._pg = DevPostgres(data=self.pg_data_dir, secrets_dir=self.secrets_dir,
                                    log_path=self.dir / "logs" / "postgres.log")
        pg.prepare(self.notes)
        port_file = self.dir / "postgres.port"
        self.pg_port = int(port_file.read_text()) if port_file.exists() else 0
        if not self.pg_port or not _port_free(self.pg_port):
            self.pg_port = _free_port()
            port_file.write_text(str(self.pg_port))
        pg.wait_ready(self._spawn("postgres", pg.command(self.pg_port), user="postgres"))

    def _cli(self) -> list[str]:
        return [self.config.python, "-m", "torpor.cli"]

    def _coordinator(self) -> None:
        assert self._pg is not None
        # The DSN holds the Postgres password: in the environment (readable by root only), not on the
        # command line (readable by every user in /proc/PID/cmdline).
        proc = self._spawn("coordinator", [
            *self._cli(), "coordinator", "--listen", self.address, "--store", self.store_url,
            "--api-key-file", str(self.secrets_dir / "api-keys"),
            "--join-token-file", str(self.secrets_dir / "join-tokens"),
            "--snapshot-key-file", str(self.secrets_dir / "snapshot-key"),
            "--lease", "10", "--heartbeat", "2",
        ], env={"TORPOR_DB": self._pg.url()})
        self._wait_port(self.config.port, proc, "coordinator")

    def _agent(self, name: str) -> None:
        state = self.agent_state_dir(name)
        state.mkdir(parents=True, exist_ok=True)
        offered = self.config.agent_memory
        memory = offered[min(self.agent_names().index(name), len(offered) - 1)] if offered else 0
        self._spawn(name, [
            *self._cli(), "agent", "--name", name, "--coordinator", self.address,
            *(["--memory", str(memory)] if memory else []),
            "--join-token-file", str(self.secrets_dir / "join-tokens"), "--slots", str(self.config.slots),
            "--state-dir", str(state), "--store", self.store_url,
            "--suspend-threshold", str(self.config.suspend_threshold), "--stop-runs-on-exit",
        ])

    def _wait_port(self, port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TorporError(f"the {what} exited (status {proc.returncode}); see {self.dir}/logs/{what}.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise TorporError(f"the {what} did not listen on port {port} within {timeout:.0f}s")

    def _write_client_env(self) -> None:
        write_private(self.dir / "client.env", f"TORPOR_ADDRESS={self.address}\nTORPOR_API_KEY={self.api_key}\n")

    # -- running ----------------------------------------------------------------------

    def failed(self) -> list[str]:
        """Postgres or the coordinator ended: the stack cannot go on."""
        return [f"{name} (exit {p.returncode})" for name, p in self.procs
                if p.poll() is not None and not name.startswith("dev-agent")]

    def reap_dead_agents(self) -> list[tuple[str, list[str]]]:
        """An agent process that died is a host that died: its containers go with it.

        Killing them (by id, from that agent's runc root) is what makes the
        death look like a host's to the coordinator, which then restores those
        runs elsewhere from their latest checkpoints. Returns what was reaped.
        """
        reaped = []
        for name, p in list(self.procs):
            if not name.startswith("dev-agent") or p.poll() is None:
                continue
            self.procs.remove((name, p))
            root = self.agent_state_dir(name) / "runc"
            out = subprocess.run(["runc", "--root", str(root), "list", "--format", "json"], capture_output=True,
                                 text=True)
            ids = [c["id"] for c in json.loads(out.stdout or "null") or []] if out.returncode == 0 else []
            for cid in ids:
                subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], capture_output=True)
            reaped.append((name, ids))
        return reaped

    def stop(self, timeout: float = 30) -> None:
        """Agents first (they kill their containers), then the coordinator, then Postgres."""
        def rank(name: str) -> int:
            return 0 if name.startswith("dev-agent") else 1 if name == "coordinator" else 2

        for group in (0, 1, 2):
            batch = [(n, p) for n, p in self.procs if rank(n) == group]
            for name, p in batch:
                if p.poll() is None:
                    # postgres: SIGINT is its "fast" shutdown.
                    p.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
            for name, p in batch:
                try:
                    p.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) did not stop in %ss; killing it", name, p.pid, timeout)
                    p.kill()
                    p.wait()
        self.procs.clear()
        self._unlock()
