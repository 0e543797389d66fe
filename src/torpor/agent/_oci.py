"""OCI bundles: a read-only root made of the host's /usr and /etc, plus the run's mounts.

Every host builds the same root (same paths, same read-only content), so a
snapshot taken on one host restores on another. Only the tmpfs work directory
and /tmp travel inside the snapshot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from torpor.agent._runtime_dir import RUNTIME_DIR
from torpor.agent._seccomp import task_seccomp

# Fixed paths inside every container.
APP_DIR = "/app"
DEPS_DIR = "/deps"  # a deployment's third-party packages (agent/_environments.py), the same path on every host
WORK_DIR = "/workspace"
SOCKET_DIR = "/run/torpor"

# The task runs as this user inside a user namespace that maps container ids
# 0..65535 to host ids HOST_ID_BASE..+65535: unprivileged both inside and on
# the host. The namespace is also what lets CRIU read and restore the task's
# rlimits and credentials without CAP_SYS_RESOURCE on the host, since the
# agent (root) owns the namespace.
TASK_UID = 1000
HOST_ID_BASE = 100_000
ID_RANGE = 65_536
_MERGED_USR_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
_TMPFS_MODES = {"/tmp": 0o1777, WORK_DIR: 0o700}


@dataclass(frozen=True, kw_only=True)
class Limits:
    memory_bytes: int = 0
    """Hard memory limit of the container; 0 = none."""
    cpus: float = 0.0
    """CPU quota in cores (1.5 = one and a half cores); 0 = none."""
    pids: int = 512
    """Most processes and threads the container may have."""


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    args: list[str]
    """The command run as the container's first process."""
    socket_dir: Path
    """Host directory bound at /run/torpor (the runtime socket lives there)."""
    app_dir: Path | None = None
    """Host directory with the deployment's code, bound read-only at /app."""
    runtime_dir: Path | None = None
    """Host directory with torpor's in-container runtime, bound read-only at /opt/torpor/runtime."""
    deps_dir: Path | None = None
    """Host directory with the deployment's environment (third-party packages), bound read-only at /deps."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the process."""
    ro_binds: tuple[str, ...] = ()
    """Host paths bound read-only at the same path (the Python installation)."""
    limits: Limits = Limits()
    """Resource limits from the task's settings."""
    work_size: int = 1 << 30
    """Size limit of the tmpfs work directory in bytes."""
    uid: int = TASK_UID
    """User the task runs as inside its user namespace (never root)."""
    gid: int = TASK_UID
    """Group the task runs as inside its user namespace."""
    hostname: str = "torpor"
    """Host name seen inside the container."""
    net_hook: str | None = None
    """A prestart hook script that sets up the container's own network namespace; None = the host's network."""
    cgroups_path: str | None = None
    """The container's cgroup (``/torpor/<agent key>/<container id>``): under its agent's, which fencing freezes."""


def _mount(dest: str, source: str, fstype: str, options: list[str]) -> dict[str, object]:
    return {"destination": dest, "type": fstype, "source": source, "options": options}


def _bind(host: str, dest: str, *, ro: bool) -> dict[str, object]:
    return _mount(dest, host, "bind", ["rbind", "ro" if ro else "rw", "nosuid", "nodev"])


def make_rootfs(rootfs: Path, extra_mountpoints: tuple[str, ...] = ()) -> None:
    """An empty root with mount points and merged-/usr symlinks.

    /bin, /lib and friends are symlinks into /usr rather than bind mounts of
    their own: CRIU's mount restore rejects binds of those. Every mount point
    is made here, by root, because runc would make missing ones as the user
    namespace's root, which may not write to this directory.
    """
    rootfs.mkdir(parents=True, exist_ok=True)
    for d in ("usr", "etc", "proc", "dev", "tmp", "app", "workspace", "run/torpor", RUNTIME_DIR, DEPS_DIR,
              *extra_mountpoints):
        (rootfs / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for name, target in _MERGED_USR_LINKS.items():
        link = rootfs / name
        if not link.is_symlink():
            link.symlink_to(target)
    # runc (1.1) gives a tmpfs the mode of the directory it is mounted on, whatever its mode= option says:
    # without these /tmp would be 0755 and owned by the namespace's root, so not writable by the task.
    for d, mode in _TMPFS_MODES.items():
        os.chmod(rootfs / d.lstrip("/"), mode)


def make_config(spec: ContainerSpec, *, criu_config: Path | None = None) -> dict[str, object]:
    caps: list[str] = []  # drop everything: the task runs unprivileged
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORK_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        **spec.env,
    }
    if spec.runtime_dir is not None:
        # torpor's runtime (and its protobuf) before the deployment's packages, which cannot replace them.
        env.setdefault("PYTHONPATH", f"{APP_DIR}:{RUNTIME_DIR}" + (f":{DEPS_DIR}" if spec.deps_dir else ""))
    mounts = [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        _mount("/dev/shm", "shm", "tmpfs", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _bind("/usr", "/usr", ro=True),
        _bind("/etc", "/etc", ro=True),
        _mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777", "size=268435456"]),
        _mount(
            WORK_DIR,
            "tmpfs",
            "tmpfs",
            ["nosuid", "nodev", f"size={spec.work_size}", "mode=0700", f"uid={spec.uid}", f"gid={spec.gid}"],
        ),
        _bind(str(spec.socket_dir), SOCKET_DIR, ro=False),
    ]
    if spec.app_dir is not None:
        mounts.append(_bind(str(spec.app_dir), APP_DIR, ro=True))
    if spec.runtime_dir is not None:
        mounts.append(_bind(str(spec.runtime_dir), RUNTIME_DIR, ro=True))
    if spec.deps_dir is not None:  # only for a deployment with dependencies: others keep the mount set they had
        mounts.append(_bind(str(spec.deps_dir), DEPS_DIR, ro=True))
    for path in spec.ro_binds:
        mounts.append(_bind(path, path, ro=True))

    resources: dict[str, object] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.limits.memory_bytes:
        resources["memory"] = {"limit": spec.limits.memory_bytes, "swap": spec.limits.memory_bytes}
    if spec.limits.cpus:
        period = 100_000
        resources["cpu"] = {"quota": int(spec.limits.cpus * period), "period": period}
    if spec.limits.pids:
        resources["pids"] = {"limit": spec.limits.pids}

    annotations = {}
    if criu_config is not None:
        # runc passes this file to CRIU as its config (works with runc 1.1.5):
        # how CRIU options such as tcp-close reach `runc checkpoint/restore`.
        annotations["org.criu.config"] = str(criu_config)

    return {
        "ociVersion": "1.0.2-dev",
        "root": {"path": "rootfs", "readonly": True},
        "hostname": spec.hostname,
        "process": {
            "terminal": False,
            "user": {"uid": spec.uid, "gid": spec.gid},
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": WORK_DIR,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
            "noNewPrivileges": True,
        },
        "mounts": mounts,
        "annotations": annotations,
        **({"hooks": {"prestart": [{"path": "/bin/sh", "args": ["sh", spec.net_hook], "timeout": 30}]}}
           if spec.net_hook else {}),
        "linux": {
            **({"cgroupsPath": spec.cgroups_path} if spec.cgroups_path else {}),
            "resources": resources,
            # A network namespace of its own, set up by the hook (agent/_netns.py); without
            # one the task shares the host's network ("host" mode).
            "namespaces": [{"type": t} for t in ("user", "pid", "ipc", "uts", "mount")]
            + ([{"type": "network"}] if spec.net_hook else []),
            "uidMappings": [{"containerID": 0, "hostID": HOST_ID_BASE, "size": ID_RANGE}],
            "gidMappings": [{"containerID": 0, "hostID": HOST_ID_BASE, "size": ID_RANGE}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            # Docker's default profile, narrowed (agent/_seccomp.py); CRIU saves and restores it with the task.
            "seccomp": task_seccomp(),
        },
    }


def write_bundle(bundle: Path, spec: ContainerSpec, *, criu_config: Path | None = None) -> Path:
    """Create ``bundle/rootfs`` and ``bundle/config.json``; return the bundle path."""
    bundle.mkdir(parents=True, exist_ok=True)
    make_rootfs(bundle / "rootfs", spec.ro_binds)
    spec.socket_dir.mkdir(parents=True, exist_ok=True)
    tmp = bundle / "config.json.tmp"
    # Root's alone from creation: it holds the run's environment, secrets included.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(make_config(spec, criu_config=criu_config), indent=1))
    os.replace(tmp, bundle / "config.json")
    return bundle
