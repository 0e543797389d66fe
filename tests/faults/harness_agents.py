"""Agent hosts: a namespace, a state directory, a ledger listener and a ``torpor agent``; the faults that hit them.

Faults:
- ``crash()``: the host dies. The agent and every process it started (runc,
  CRIU, the containers, the guard if it is a child) are stopped at once with
  SIGSTOP, then killed with SIGKILL; then every container in the agent's runc
  root is removed by id (``reap()``).
- ``pause()``/``resume()``: SIGSTOP/SIGCONT of the agent process only, as a
  hung agent (its containers and guard go on).
- partitions are the network's (``Network.partition``).

``reap()`` is also the clean-up, and is safe whatever state the host is in:
the agent by pid, the guard by the pid in ``STATE/guard.pid`` (if the agent
made one), then each container of the agent's runc root by id, after
thawing any freezer cgroup of those containers (or their parents, under
``torpor/``) left FROZEN: a process in a frozen cgroup v1 cannot die.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
from pathlib import Path

from harness_net import Host
from harness_procs import Proc, kill_pid_if
from helpers import assert_eventually

log = logging.getLogger(__name__)

FREEZER = Path("/sys/fs/cgroup/freezer")
CGROUP_ROOT = Path("/sys/fs/cgroup")
LEDGER_SCRIPT = Path(__file__).resolve().parent / "harness_ledger.py"
SAME = object()  # start(): keep the option as it was


class AgentHost:
    def __init__(self, host: Host, *, state_dir: Path, logs: Path, python: str, ledger_port: int,
                 base_args: list[str], env: dict[str, str]) -> None:
        self.host = host
        self.name = host.name
        self.state = state_dir
        self.logs = logs
        self.python = python
        self.ledger_port = ledger_port
        self.ledger_file = logs / f"ledger-{host.name}.jsonl"
        self.base_args = base_args
        self.env = env
        self.proc: Proc | None = None
        self.ledger: Proc | None = None
        self.first_start = 0.0
        self.image_dir: Path | None = None
        self.faults = ""
        self.slots = 4
        self.paused = False
        self.cgroup_dirs: set[Path] = set()

    def __repr__(self) -> str:
        return f"<agent {self.name} pid {self.proc.pid if self.proc else None}>"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    @property
    def images(self) -> Path:
        return self.image_dir or (self.state / "images")

    # -- start and stop -------------------------------------------------------------

    def start_ledger(self) -> None:
        self.ledger = Proc(f"ledger-{self.name}",
                           [*self.host.prefix, self.python, str(LEDGER_SCRIPT), str(self.ledger_port),
                            str(self.ledger_file), self.name],
                           log_path=self.logs / f"ledger-{self.name}.log")
        self.ledger.wait_log("ledger listening", timeout=20)

    def start(self, *, slots: int | None = None, faults: str | None = None,
              image_dir: Path | None | object = SAME) -> Proc:
        """Start (or start again) the agent; options given here stay for later restarts."""
        assert self.proc is None or not self.proc.alive, f"{self} is running"
        if slots is not None:
            self.slots = slots
        if faults is not None:
            self.faults = faults
        if image_dir is not SAME:
            self.image_dir = image_dir  # type: ignore[assignment]
        # The workload reports to the ledger on the loopback of the host it runs on: host network (see fault_tasks.py).
        args = [*self.base_args, "--name", self.name, "--state-dir", str(self.state), "--slots", str(self.slots),
                "--allow-host-network"]
        if self.image_dir is not None:
            args += ["--image-dir", str(self.image_dir)]
        env = {**self.env, "TORPOR_FAULTS": self.faults}
        self.proc = Proc(f"agent-{self.name}", [*self.host.prefix, self.python, "-m", "torpor.cli", "-v", "agent", *args],
                         log_path=self.logs / f"agent-{self.name}.log", env=env)
        self.first_start = self.first_start or self.proc.started
        return self.proc

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    def wait_registered(self, timeout: float = 30.0) -> None:
        self.wait_log(f' as {self.name}"', timeout=timeout)  # the JSON log line "registered with ADDRESS as NAME"

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        """Wait until the agent (since it last started) logged ``needle``: a fault point reached, say."""
        assert self.proc is not None
        self.proc.wait_log(needle, timeout=timeout)

    # -- faults ---------------------------------------------------------------------

    def crash(self) -> None:
        """The host dies: the agent and everything it started stop at once, then die; containers are removed."""
        assert self.proc is not None
        tree = self.proc.tree()
        for p in tree:
            _signal(p, signal.SIGSTOP)
        for p in tree:
            _signal(p, signal.SIGKILL)
        self.proc.popen.wait(timeout=30)
        self.reap()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGCONT)
        self.paused = False

    # -- looking at it ----------------------------------------------------------------

    def running(self, program: str) -> bool:
        """Whether a process named ``program`` (e.g. "criu") runs under the agent right now."""
        for p in self.proc.tree() if self.proc is not None else []:
            try:
                if p.name() == program:
                    return True
            except Exception:  # noqa: BLE001, S112 - gone since the listing
                continue
        return False

    def containers(self) -> list[dict]:
        if not self.runc_root.exists():
            return []
        out = subprocess.run(["runc", "--root", str(self.runc_root), "list", "--format", "json"],
                             check=False, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return []
        found = json.loads(out.stdout or "null") or []
        for c in found:
            self._note_cgroups(c["id"])
        return found

    def scratch(self) -> list[str]:
        """CRIU scratch left on disk: image and work directories."""
        found = [p.name for p in self.images.glob("*")] if self.images.exists() else []
        criu = self.state / "criu"
        if criu.exists():
            found += [p.name for p in criu.glob("*.work")]
        return found

    # -- clean-up -----------------------------------------------------------------------

    def reap(self) -> None:
        """Kill the agent (by pid), its guard (by the pid it wrote), and its containers (by id)."""
        if self.proc is not None and self.proc.alive:
            for p in self.proc.tree():
                _signal(p, signal.SIGKILL)
            self.proc.popen.wait(timeout=30)
        guard = self.state / "guard.pid"
        if guard.exists() and self.first_start:
            try:
                pid = int(guard.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                pid = 0
            if pid and kill_pid_if(pid, started_after=self.first_start, cmd_has="torpor"):
                log.info("%s: killed its guard %d", self.name, pid)
        containers = self.containers()
        for c in containers:
            self._thaw(c["id"])
        for c in containers:
            _runc(self.runc_root, "kill", c["id"], "KILL")
            _runc(self.runc_root, "delete", "-f", c["id"])
        if containers:
            assert_eventually(lambda: not self.containers(), timeout=30, msg=f"containers of {self.name} remain")

    def _thaw(self, container_id: str) -> None:
        """Write THAWED to every FROZEN freezer cgroup of this container, from the top (torpor/...) down."""
        for path in self._freezer_paths(container_id):
            state = path / "freezer.state"
            try:
                if state.read_text().strip() != "THAWED":
                    state.write_text("THAWED")
                    log.info("%s: thawed %s", self.name, path)
            except OSError:
                pass

    def _note_cgroups(self, container_id: str) -> dict[str, str]:
        """The container's cgroup directories (from runc's state), remembered for remove_cgroups()."""
        try:
            paths = json.loads((self.runc_root / container_id / "state.json").read_text()).get("cgroup_paths", {})
        except (OSError, ValueError):
            return {}
        self.cgroup_dirs.update(Path(p) for p in paths.values())
        return paths

    def _freezer_paths(self, container_id: str) -> list[Path]:
        own = Path(self._note_cgroups(container_id).get("freezer", ""))
        if not str(own).startswith(str(FREEZER) + "/"):
            return []
        chain = [own]
        while chain[-1].parent != FREEZER and chain[-1].parent != FREEZER / "torpor":
            chain.append(chain[-1].parent)
        return list(reversed(chain))

    def remove_cgroups(self) -> None:
        """rmdir the (empty) cgroup directories of this agent's containers and their parents under torpor/.

        Besides the ones seen in runc's state, the agent's own parent: ``torpor/<key>`` in every hierarchy,
        key = sha256 of its state directory (agent/_containers.py). rmdir removes only empty directories.
        """
        key = hashlib.sha256(str(self.state.resolve()).encode()).hexdigest()[:12]
        own = {h / "torpor" / key for h in CGROUP_ROOT.iterdir() if (h / "torpor" / key).is_dir()}
        for path in sorted(self.cgroup_dirs | own, key=lambda p: -len(str(p))):
            p = path
            while "/torpor/" in str(p) and p != p.parent:
                try:
                    os.rmdir(p)
                except OSError:
                    break
                p = p.parent

    def close(self) -> None:
        self.reap()
        self.remove_cgroups()
        if self.ledger is not None:
            self.ledger.kill()


def _signal(p, sig: int) -> None:  # type: ignore[no-untyped-def]
    try:
        p.send_signal(sig)
    except Exception:  # noqa: BLE001, S110 - gone already
        pass


def _runc(root: Path, *args: str) -> None:
    subprocess.run(["runc", "--root", str(root), *args], check=False, capture_output=True, text=True, timeout=30)
