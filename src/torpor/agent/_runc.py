"""runc driven as a CLI, the way containerd's shim drives it.

Containers run in the foreground of a ``runc run``/``runc restore`` child
process: its exit status is the task's exit status, and its stdio are the
pipes the agent reads logs from (runc records them in descriptors.json at
checkpoint time and maps them to the new pipes on restore).
"""

from __future__ import annotations

import json
import logging
import os
import signal as signal_module
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from torpor._errors import ContainerError, CriuError
from torpor.agent._criu import CriuInfo, log_excerpt

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ContainerState:
    id: str
    pid: int
    status: str
    bundle: str


class Runc:
    """One runc state root (``--root``): the containers of one agent."""

    def __init__(self, *, root: Path, criu: CriuInfo, binary: str = "runc") -> None:
        self.root = root
        self.criu = criu
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)

    def _base(self) -> list[str]:
        return [self.binary, "--root", str(self.root), "--criu", self.criu.path]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self._base(), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise ContainerError(f"runc not found ({self.binary}): install the Debian package 'runc'") from exc
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"runc {args[0]} did not finish within {timeout:.0f}s") from exc

    def version(self) -> str:
        out = self._run("--version").stdout
        return out.splitlines()[0].split()[-1] if out else "unknown"

    def spawn_run(self, container_id: str, bundle: Path, *, stdout: int, stderr: int, pid_file: Path) -> subprocess.Popen[bytes]:
        """Start ``runc run`` in the foreground; returns the runc process."""
        return self._spawn(["run", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id], stdout, stderr)

    def spawn_restore(
        self,
        container_id: str,
        bundle: Path,
        *,
        image_dir: Path,
        work_dir: Path,
        stdout: int,
        stderr: int,
        pid_file: Path,
    ) -> subprocess.Popen[bytes]:
        args = [
            "restore",
            "--bundle", str(bundle),
            "--image-path", str(image_dir),
            "--work-path", str(work_dir),
            "--pid-file", str(pid_file),
            container_id,
        ]
        return self._spawn(args, stdout, stderr)

    def _spawn(self, args: list[str], stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        log_file = self.root / f"{args[-1]}.runc.log"
        cmd = [*self._base(), "--log", str(log_file), "--log-format", "text", *args]
        # start_new_session: a Ctrl-C aimed at the agent must not reach the
        # container through the terminal's process group.
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)

    def checkpoint(self, container_id: str, *, image_dir: Path, work_dir: Path, leave_running: bool) -> None:
        proc = self.start_checkpoint(container_id, image_dir=image_dir, work_dir=work_dir, leave_running=leave_running)
        self.finish_checkpoint(proc, container_id, work_dir=work_dir)

    def start_checkpoint(self, container_id: str, *, image_dir: Path, work_dir: Path,
                         leave_running: bool) -> subprocess.Popen[str]:
        """Start ``runc checkpoint``; CRIU writes into ``image_dir`` while it runs."""
        image_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        args = ["checkpoint", "--image-path", str(image_dir), "--work-path", str(work_dir)]
        if leave_running:
            args.append("--leave-running")
        # Its own process group: CRIU runs as runc's child, and a hung dump is ended by killing both.
        return subprocess.Popen([*self._base(), *args, container_id], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def finish_checkpoint(self, proc: subprocess.Popen[str], container_id: str, *, work_dir: Path,
                          timeout: float = 600) -> None:
        """Wait for a checkpoint started with ``start_checkpoint``; CriuError with CRIU's words if it failed."""
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal_module.SIGKILL)  # runc and its CRIU
            except ProcessLookupError:
                pass
            proc.communicate()
            self.resume(container_id)
            raise ContainerError(f"checkpoint of container {container_id} did not finish within {timeout:.0f}s: "
                                 "CRIU was killed and the container thawed") from None
        if proc.returncode != 0:
            dump_log = work_dir / "dump.log"
            raise CriuError(
                f"checkpoint of container {container_id} failed: {stderr.strip()[-500:]}",
                log_path=str(dump_log) if dump_log.exists() else None,
                log_excerpt=log_excerpt(dump_log),
            )

    def resume(self, container_id: str) -> bool:
        """Thaw a container left frozen (by a CRIU killed mid-dump, or one that found it frozen); True if it was.

        A running one is left as it is.
        """
        st = self.state(container_id)
        if st is None or st.status != "paused":
            return False
        proc = self._run("resume", container_id)
        if proc.returncode != 0:
            raise ContainerError(f"runc resume {container_id} failed: {proc.stderr.strip()}")
        return True

    def kill(self, container_id: str, signal: str = "KILL", *, every_process: bool = False) -> None:
        """Signal the container's first process, or with ``every_process`` each of its processes."""
        proc = self._run("kill", *(["--all"] if every_process else []), container_id, signal)
        if proc.returncode != 0 and "not running" not in proc.stderr and "does not exist" not in proc.stderr:
            raise ContainerError(f"runc kill {container_id} {signal} failed: {proc.stderr.strip()}")

    def delete(self, container_id: str) -> None:
        """Force-delete; a container that does not exist is not an error."""
        proc = self._run("delete", "-f", container_id)
        if proc.returncode != 0 and "does not exist" not in proc.stderr:
            raise ContainerError(f"runc delete -f {container_id} failed: {proc.stderr.strip()}")

    def state(self, container_id: str) -> ContainerState | None:
        proc = self._run("state", container_id)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout)
        return ContainerState(id=data["id"], pid=data["pid"], status=data["status"], bundle=data["bundle"])

    def list(self) -> list[ContainerState]:
        proc = self._run("list", "--format", "json")
        if proc.returncode != 0:
            raise ContainerError(f"runc list failed: {proc.stderr.strip()}")
        items = json.loads(proc.stdout or "null") or []
        return [ContainerState(id=d["id"], pid=d["pid"], status=d["status"], bundle=d["bundle"]) for d in items]


def wait_started(proc: subprocess.Popen[bytes], pid_file: Path, *, timeout: float, what: str, log_path: Path | None = None,
                 runc_log: Path | None = None) -> int:
    """Wait until runc wrote the container's pid, or fail with runc's/CRIU's words."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text:
                return int(text)
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        # runc runs in a session of its own (spawn): end it with its CRIU, not runc alone.
        try:
            os.killpg(proc.pid, signal_module.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise ContainerError(f"{what}: the container did not start within {timeout:.0f}s")
    detail = ""
    if runc_log is not None and runc_log.exists():
        detail = runc_log.read_text(errors="replace").strip()[-800:]
    if log_path is not None and log_path.exists():
        raise CriuError(f"{what} failed (runc exit {proc.returncode}): {detail}", log_path=str(log_path),
                        log_excerpt=log_excerpt(log_path))
    raise ContainerError(f"{what} failed (runc exit {proc.returncode}): {detail}")


def runc_log_path(root: Path, container_id: str) -> Path:
    return root / f"{container_id}.runc.log"


def remove_runc_log(root: Path, container_id: str) -> None:
    try:
        os.unlink(runc_log_path(root, container_id))
    except FileNotFoundError:
        pass
