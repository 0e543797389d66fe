"""Containers of one agent: start, checkpoint to the store, restore from it, kill.

This is the library layer under the agent daemon: it knows nothing of the
coordinator. One container per run; each start or restore gets a fresh
container id and bundle directory, so a run restored on the same host never
collides with its past self.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torpor._errors import ConfigError, ContainerError, StoreError
from torpor._seal import Keyring
from torpor.agent._criu import CriuInfo
from torpor.agent._container_networks import ContainerNetworks
from torpor.agent._netns import DEFAULT_SUBNET, NetworkPool, RunNetwork
from torpor.agent._oom import OomWatcher
from torpor.agent._logs import LogBudget
from torpor.agent._oci import HOST_ID_BASE, ContainerSpec, Limits, write_bundle
from torpor.agent._runc import Runc, remove_runc_log, runc_log_path, wait_started
from torpor.agent._runtime_dir import prepare_runtime_dir
from torpor.agent._seccomp import task_seccomp
from torpor.agent._snapshot import (
    ArchiveWriter,
    Manifest,
    _Regrown,
    archive_while_dumping,
    finish_archive,
    read_manifest,
    upload_image,
    verify_archived,
    write_manifest,
)
from torpor.agent._unpack import download_image, open_key
from torpor.store import Progress, Store

log = logging.getLogger(__name__)

LogSink = Callable[[str, str, bytes, int], None]
"""Called with (run_id, "stdout"|"stderr", data, dropped_bytes) for every chunk of a container's output kept;
``dropped_bytes`` is non-zero for the marker line that stands for output the log budget dropped."""

# CRIU options for every checkpoint and restore, through runc's org.criu.config
# annotation. tcp-close: established TCP connections come back closed (the
# peer is gone anyway); listening sockets are restored listening. empty-ns net:
# the run's network namespace is made afresh on restore, by runc and the
# agent's hook, rather than restored with the addresses of the dumping host.
CRIU_OPTIONS = ["tcp-close", "empty-ns net"]
# Capacity of each output pipe, and the most the agent reads from one at a time.
PIPE_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    state_dir: Path
    """Where bundles, logs, images and runc state live (kept 0711: task users must traverse it)."""
    python: str = "/usr/bin/python3"
    """Interpreter inside containers; it must be under /usr (bound read-only from the host)."""
    image_dir: Path | None = None
    """Scratch space for CRIU images (a tmpfs makes dumps faster); default state_dir/images."""
    start_timeout: float = 30.0
    """Seconds a start or restore may take before it is declared failed."""
    dump_timeout: float = 600.0
    """Seconds a dump may take; past that CRIU is killed, the container thawed and the checkpoint fails."""
    upload_patience: float = 3600.0
    """Seconds a suspend's image, on local disk once the task is gone, is uploaded again while the store is down."""
    extra_ro_binds: tuple[str, ...] = ()
    """More host paths bound read-only at the same path (they must be world-traversable)."""
    network: str = "egress"
    """Network mode of a run whose task names none: egress, none or host (agent/_netns.py)."""
    run_network: str = DEFAULT_SUBNET
    """IPv4 network the agent takes each egress run's /30 from (shared by the agents of a host)."""
    allow_host_network: bool = False
    """Whether a task may ask for the host's network (giving up network isolation)."""


@dataclass(kw_only=True)
class Container:
    id: str
    run_id: str
    bundle: Path
    socket_dir: Path
    proc: subprocess.Popen[bytes]
    pid: int
    restored_from: str | None = None
    _pumps: list[threading.Thread] = field(default_factory=list)
    timings_ms: dict[str, int] = field(default_factory=dict)
    """A restore's phases: download (fetch, open, unpack), setup (namespace, bundle), criu (runc restore)."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to end; its exit status (128+N when killed by signal N)."""
        code = self.proc.wait(timeout)
        for t in self._pumps:
            t.join(timeout=5)
        return code

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


def _abort_quietly(archive: ArchiveWriter) -> None:
    try:
        archive.abort()
    except Exception:  # the store is down: the sweeper removes what the upload left
        log.debug("could not abort a multipart upload", exc_info=True)


def _remove_later(*paths: Path) -> None:
    def remove() -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    threading.Thread(target=remove, daemon=True, name="rm-scratch").start()


class ContainerManager:
    """``keys``: the snapshot keys (``torpor._seal.Keyring``): every checkpoint is sealed under
    ``keys.current``, and a restore opens snapshots sealed under any of them. None (an agent that has not
    registered yet) refuses checkpoints and restores only snapshots from before encryption. The daemon
    replaces ``keys`` when its coordinator hands it keys; each checkpoint or restore reads it once.
    """

    def __init__(self, config: AgentConfig, *, runc: Runc, store: Store, keys: Keyring | None,
                 log_sink: LogSink | None = None) -> None:
        self.config = config
        self.runc = runc
        self.store = store
        self.keys = keys
        self.log_sink = log_sink
        self.state = config.state_dir
        longest = len(str(self.state)) + len("/sockets/") + 12 + len("/runtime.sock.new")
        if longest > 107:
            raise ConfigError(
                f"state directory {self.state} is too long for unix socket paths ({longest} > 107 bytes); "
                "use a shorter --state-dir"
            )
        for sub in ("containers", "logs", "runtime", "bundles", "sockets", "criu"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o711)
        for sub in ("containers", "sockets"):
            os.chmod(self.state / sub, 0o711)
        self.images = config.image_dir or (self.state / "images")
        self.images.mkdir(parents=True, exist_ok=True)
        os.chmod(self.images, 0o711)
        self.runtime_dir = prepare_runtime_dir(self.state / "runtime")
        # Every container of this agent lives under one cgroup, which lease fencing freezes as a whole
        # (agent/_fence.py); the key tells apart the agents of one host (each has its own state directory).
        self.cgroup_parent = "torpor/" + hashlib.sha256(str(self.state.resolve()).encode()).hexdigest()[:12]
        self.oom = OomWatcher(self.cgroup_parent)
        self.nets = ContainerNetworks(NetworkPool(config.run_network), default=config.network,
                                      allow_host=config.allow_host_network, bundles=self.state / "containers")
        self.criu_config = self.state / "criu" / "torpor.conf"
        self.criu_config.write_text("".join(f"{opt}\n" for opt in CRIU_OPTIONS))
        task_seccomp()  # an unusable seccomp profile stops the agent here, not each run at its start

    @property
    def criu(self) -> CriuInfo:
        return self.runc.criu

    # -- paths ---------------------------------------------------------------

    def run_log(self, run_id: str, stream: str) -> Path:
        d = self.state / "logs" / run_id
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{stream}.log"

    def _new_id(self, run_id: str) -> str:
        return f"{run_id}.{uuid.uuid4().hex[:8]}"

    def _spec(self, run_id: str, container_id: str, args: list[str], app_dir: Path | None,
              env: dict[str, str] | None, limits: Limits, network: str | None,
              deps_dir: Path | None = None) -> ContainerSpec:
        if app_dir is None:
            # Every container has the same mount set, so any checkpoint restores
            # into any bundle: no code means an empty, read-only /app.
            app_dir = self.state / "empty"
            app_dir.mkdir(mode=0o555, exist_ok=True)
        # Unix socket paths are limited to 107 bytes: a short, unique name.
        socket_dir = self.state / "sockets" / hashlib.sha256(container_id.encode()).hexdigest()[:12]
        socket_dir.mkdir(parents=True, exist_ok=True)
        # The task's user (HOST_ID_BASE + uid inside) connects to the socket.
        os.chown(socket_dir, HOST_ID_BASE + 1000, HOST_ID_BASE + 1000)
        os.chmod(socket_dir, 0o770)
        net = self.nets.claim(container_id, network)
        return ContainerSpec(
            args=args,
            socket_dir=socket_dir,
            app_dir=app_dir,
            deps_dir=deps_dir,
            runtime_dir=self.runtime_dir,
            env={"TORPOR_RUN_ID": run_id, **(env or {})},
            ro_binds=self.config.extra_ro_binds,
            limits=limits,
            cgroups_path=f"/{self.cgroup_parent}/{container_id}",
            net_hook=self.nets.hook(container_id, net),
        )

    # -- log pipes -------------------------------------------------------------

    def _pipes(self, run_id: str, budget: LogBudget | None) -> tuple[list[int], list[threading.Thread]]:
        write_ends = []
        pumps = []
        for stream in ("stdout", "stderr"):
            r, w = os.pipe()
            try:  # fewer, bigger reads: a task printing gigabytes costs the agent less CPU
                fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                pass  # over /proc/sys/fs/pipe-max-size: the default 64 KiB works too
            write_ends.append(w)
            t = threading.Thread(target=self._pump, args=(r, run_id, stream, budget), daemon=True,
                                 name=f"log-{stream}-{run_id}")
            pumps.append(t)
        return write_ends, pumps

    def _pump(self, fd: int, run_id: str, stream: str, budget: LogBudget | None) -> None:
        """Copy one output pipe to the run's log file and the sink, within the attempt's log budget.

        Over the budget, output is still read (the task must not block on a
        full pipe) but neither kept nor sent; a marker line with the count of
        dropped bytes ends this container's output.
        """
        ends_line = True
        with open(self.run_log(run_id, stream), "ab", buffering=0) as out:
            def emit(data: bytes, dropped: int = 0) -> None:
                out.write(data)
                if self.log_sink is not None:
                    try:
                        self.log_sink(run_id, stream, data, dropped)
                    except Exception:  # a failing sink must not stop the copy to disk
                        log.exception("log sink failed")

            while True:
                try:
                    data = os.read(fd, PIPE_BYTES)
                except OSError:
                    break
                if not data:
                    break
                keep, notice = budget.admit(data, stream) if budget is not None else (data, b"")
                if keep:
                    emit(keep)
                    ends_line = keep.endswith(b"\n")
                if notice:
                    emit(notice if ends_line else b"\n" + notice)
                    ends_line = True
            dropped = budget.take_dropped(stream) if budget is not None else 0
            if dropped:
                marker = budget.marker(dropped)  # type: ignore[union-attr]
                emit(marker if ends_line else b"\n" + marker, dropped)
        os.close(fd)

    def _launch(self, run_id: str, container_id: str, bundle: Path, spawn: Callable[[int, int, Path], subprocess.Popen[bytes]],
                what: str, criu_log: Path | None, restored_from: str | None, socket_dir: Path,
                log_budget: LogBudget | None = None) -> Container:
        (w_out, w_err), pumps = self._pipes(run_id, log_budget)
        pid_file = bundle / "container.pid"
        try:
            proc = spawn(w_out, w_err, pid_file)
        finally:
            # Our copies of the write ends must close, or the pumps never see EOF.
            os.close(w_out)
            os.close(w_err)
        for t in pumps:
            t.start()
        try:
            pid = wait_started(proc, pid_file, timeout=self.config.start_timeout, what=what, log_path=criu_log,
                               runc_log=runc_log_path(self.runc.root, container_id))
        except BaseException:
            self._cleanup(container_id, bundle, socket_dir)
            raise
        self.oom.watch(container_id)
        return Container(id=container_id, run_id=run_id, bundle=bundle, socket_dir=socket_dir, proc=proc, pid=pid,
                         restored_from=restored_from, _pumps=pumps)

    # -- operations ------------------------------------------------------------

    def start(self, *, run_id: str, args: list[str], app_dir: Path | None = None, env: dict[str, str] | None = None,
              limits: Limits = Limits(), before_launch: Callable[[Path], None] | None = None,
              network: str | None = None, log_budget: LogBudget | None = None,
              deps_dir: Path | None = None) -> Container:
        """Start a container; ``before_launch(socket_dir)`` runs once its socket directory exists.

        ``network``: egress, none or host (default: the agent's); the container gets a namespace of its own.
        ``log_budget``: the output this container may keep (None: all of it).
        """
        container_id = self._new_id(run_id)
        with self.nets.given_back_on_failure(container_id):
            spec = self._spec(run_id, container_id, args, app_dir, env, limits, network, deps_dir)
            if before_launch is not None:
                before_launch(spec.socket_dir)
            bundle = write_bundle(self.state / "containers" / container_id, spec, criu_config=self.criu_config)
        log.info("starting container %s", container_id, extra={"run_id": run_id})
        return self._launch(
            run_id, container_id, bundle,
            lambda o, e, pf: self.runc.spawn_run(container_id, bundle, stdout=o, stderr=e, pid_file=pf),
            f"start of run {run_id}", None, None, spec.socket_dir, log_budget,
        )

    def checkpoint(self, container: Container, *, checkpoint_id: str | None = None, kind: str = "suspend",
                   leave_running: bool = False, deployment_version: str = "", parent: str | None = None,
                   progress: Progress | None = None) -> Manifest:
        """Dump ``container`` and make the snapshot durable in the store.

        Stop mode (``leave_running=False``) ends the container; it is deleted
        and its bundle removed once the snapshot is durable. On failure the
        CRIU log is uploaded beside where the snapshot would have been.
        """
        keys = self.keys
        if keys is None:
            raise ConfigError(f"no checkpoint of container {container.id}: this agent has no snapshot key yet (its "
                              "coordinator hands it one when it registers), and snapshots are never stored in clear")
        checkpoint_id = checkpoint_id or uuid.uuid4().hex
        image_dir = self.images / f"{container.id}-{checkpoint_id}"
        work_dir = image_dir.with_name(image_dir.name + ".work")
        t0 = time.monotonic()
        meta = dict(run_id=container.run_id, checkpoint_id=checkpoint_id, kind=kind, criu_version=self.criu.version,
                    deployment_version=deployment_version, parent=parent, dump_log=work_dir / "dump.log",
                    network=self.nets.mode_of(container.id))
        try:
            proc = self.runc.start_checkpoint(container.id, image_dir=image_dir, work_dir=work_dir,
                                              leave_running=leave_running)
            # Compression, sealing and upload run while CRIU dumps (see _snapshot).
            archive = ArchiveWriter(self.store, container.run_id, checkpoint_id, keys=keys, progress=progress)
            deadline = time.monotonic() + self.config.dump_timeout

            def dumping() -> bool:
                # A hung CRIU must not hold the run (frozen, or SUSPENDING) for ever.
                if proc.poll() is None and time.monotonic() > deadline:
                    self._abandon_dump(proc, container)
                return proc.poll() is None

            try:
                archived = archive_while_dumping(archive, image_dir, dumping)
                try:
                    if time.monotonic() > deadline:
                        raise ContainerError(
                            f"the checkpoint of container {container.id} did not finish within "
                            f"{self.config.dump_timeout:g}s: CRIU was killed and the container thawed")
                    self.runc.finish_checkpoint(proc, container.id, work_dir=work_dir,
                                                timeout=max(1.0, deadline - time.monotonic()))
                except ContainerError:
                    self._keep_failed_log(container.run_id, checkpoint_id, work_dir / "dump.log")
                    raise
                dump_ms = int((time.monotonic() - t0) * 1000)
                verify_archived(image_dir, archived)
                finish_archive(archive, image_dir, archived)
                size, sha = archive.close()
                timings = {"dump": dump_ms, "upload_after_dump": int((time.monotonic() - t0) * 1000) - dump_ms}
                manifest = write_manifest(self.store, archive, size, sha, timings_ms=timings, **meta)  # type: ignore[arg-type]
            except _Regrown as exc:
                # CRIU wrote a pages file after starting a later one: archive it again, after the dump.
                archive.abort()
                log.warning("pages file %s grew after it was archived; uploading the image again", exc)
                manifest = upload_image(self.store, image_dir, keys=keys, timings_ms={"dump": dump_ms},
                                        progress=progress, **meta)  # type: ignore[arg-type]
            except StoreError as exc:
                # The store failed while CRIU was dumping to local disk: let the dump finish there. A stop-mode
                # dump has ended the task, so its image is the run's only copy: upload it again until the store
                # is back. A leave-running one just fails (the task goes on, thawed by CRIU).
                _abort_quietly(archive)
                log.warning("the store failed during the dump of %s (%s); finishing the dump on local disk",
                            container.id, exc, extra={"run_id": container.run_id})
                try:
                    self.runc.finish_checkpoint(proc, container.id, work_dir=work_dir,
                                                timeout=max(1.0, deadline - time.monotonic()))
                except ContainerError:
                    self._keep_failed_log(container.run_id, checkpoint_id, work_dir / "dump.log")
                    raise
                if leave_running:
                    raise
                dump_ms = int((time.monotonic() - t0) * 1000)
                manifest = self._upload_until_stored(image_dir, dump_ms, progress, meta, keys)
            except BaseException:
                archive.abort()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise
        finally:
            # Scratch only (the snapshot is in the store by now): freeing a
            # multi-GB image takes a while, so it happens off the critical path.
            _remove_later(image_dir, work_dir)
        if not leave_running:
            try:
                container.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("runc of %s still running after its checkpoint; killing it", container.id)
                container.proc.kill()
            self._cleanup(container.id, container.bundle, container.socket_dir)
        return manifest

    def _upload_until_stored(self, image_dir: Path, dump_ms: int, progress: Progress | None,
                             meta: dict[str, object], keys: Keyring) -> Manifest:
        """Upload a finished stop-mode image, again and again while the store is down (up to ``upload_patience``)."""
        give_up = time.monotonic() + self.config.upload_patience
        delay = 0.5
        while True:
            try:
                return upload_image(self.store, image_dir, keys=keys, timings_ms={"dump": dump_ms},
                                    progress=progress, **meta)  # type: ignore[arg-type]
            except StoreError as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("cannot store the snapshot of run %s yet (%s); trying again in %.1fs",
                            meta["run_id"], exc, delay, extra={"run_id": meta["run_id"]})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _abandon_dump(self, proc: subprocess.Popen[str], container: Container) -> None:
        """Kill runc checkpoint and its CRIU (one process group), then thaw what CRIU froze."""
        log.error("the dump of container %s passed its %gs deadline; killing CRIU", container.id,
                  self.config.dump_timeout, extra={"run_id": container.run_id})
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        self.runc.resume(container.id)

    def _keep_failed_log(self, run_id: str, checkpoint_id: str, dump_log: Path) -> None:
        if not dump_log.exists():
            return
        keep = self.state / "logs" / run_id / f"criu-dump-{checkpoint_id}.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dump_log, keep)
        try:
            self.store.put_bytes(f"runs/{run_id}/checkpoints/{checkpoint_id}/dump.failed.log", dump_log.read_bytes())
        except Exception:  # the local copy is kept either way
            log.warning("could not upload the failed CRIU log of %s", checkpoint_id, exc_info=True)

    def restore(self, manifest: Manifest | str, *, app_dir: Path | None = None, limits: Limits = Limits(),
                progress: Progress | None = None, before_launch: Callable[[Path], None] | None = None,
                network: str | None = None, log_budget: LogBudget | None = None,
                sealed_under: str | None = None, deps_dir: Path | None = None) -> Container:
        """Download, verify and restore a checkpoint under a new container id and bundle.

        The container gets a fresh namespace of the mode the checkpoint was taken in (``network`` for a
        checkpoint that does not say): its listening sockets listen again there, its connections to the
        outside come back closed. ``log_budget``: the output it may keep (None: all of it).
        ``sealed_under``: the key id the checkpoint was recorded with; a manifest that is not sealed under it
        (an unencrypted one put in its place) is refused.
        """
        if isinstance(manifest, str):
            manifest = read_manifest(self.store, manifest)
        keys = self.keys
        open_key(manifest, keys, sealed_under=sealed_under)  # a missing key fails here, before any download
        run_id = manifest.run_id
        container_id = self._new_id(run_id)
        image_dir = self.images / f"{container_id}-restore"
        work_dir = self.state / "criu" / f"{container_id}.work"
        t0 = time.monotonic()
        download_image(self.store, manifest, image_dir, keys=keys, progress=progress)
        t1 = time.monotonic()
        try:
            # CRIU opens some images from inside the new user namespace before
            # its id maps exist, so they must be readable by "others"; the
            # 0711 parent keeps their names unlistable, and they are removed
            # as soon as the restore is done.
            os.chmod(image_dir, 0o755)
            with self.nets.given_back_on_failure(container_id):
                spec = self._spec(run_id, container_id, ["/bin/false"], app_dir, None, limits,
                                  manifest.network or network, deps_dir)
                if before_launch is not None:
                    before_launch(spec.socket_dir)
                bundle = write_bundle(self.state / "containers" / container_id, spec, criu_config=self.criu_config)
                work_dir.mkdir(parents=True, exist_ok=True)
            log.info("restoring %s as container %s", manifest.checkpoint_id, container_id, extra={"run_id": run_id})
            t2 = time.monotonic()
            container = self._launch(
                run_id, container_id, bundle,
                lambda o, e, pf: self.runc.spawn_restore(container_id, bundle, image_dir=image_dir, work_dir=work_dir,
                                                         stdout=o, stderr=e, pid_file=pf),
                f"restore of checkpoint {manifest.checkpoint_id} (run {run_id})", work_dir / "restore.log",
                manifest.checkpoint_id, spec.socket_dir, log_budget,
            )
            container.timings_ms = {"download": int((t1 - t0) * 1000), "setup": int((t2 - t1) * 1000),
                                    "criu": int((time.monotonic() - t2) * 1000)}
            return container
        finally:
            _remove_later(image_dir)  # CRIU is done with it; freeing it need not delay the run

    def kill(self, container: Container) -> int:
        """Kill and delete ``container``; returns its exit status."""
        self.runc.kill(container.id, "KILL")
        try:
            code = container.wait(timeout=30)
        except subprocess.TimeoutExpired:
            container.proc.kill()
            code = container.wait(timeout=10)
        self._cleanup(container.id, container.bundle, container.socket_dir)
        return code

    def oom_killed(self, container: Container) -> bool:
        """Whether the kernel's OOM killer ended this container (ask once it has exited)."""
        return self.oom.oom_killed(container.id)

    def network_of(self, container: Container) -> RunNetwork | None:
        return self.nets.of(container.id)

    def _cleanup(self, container_id: str, bundle: Path, socket_dir: Path) -> None:
        try:
            self.runc.delete(container_id)
        except ContainerError:
            log.warning("runc delete of %s failed", container_id, exc_info=True)
        remove_runc_log(self.runc.root, container_id)
        self.nets.release(container_id)
        self.oom.forget(container_id)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(self.state / "criu" / f"{container_id}.work", ignore_errors=True)
