"""Host checks: can this machine run torpor? One result per check, with the fix."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torpor._errors import TorporError


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        if self.ok:
            d.pop("fix")
        return d


def _run(args: list[str], timeout: float = 30) -> tuple[int, str]:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return p.returncode, (p.stdout + p.stderr).strip()


def check_root() -> Check:
    ok = os.geteuid() == 0
    return Check(name="root", ok=ok, detail="running as root" if ok else f"running as uid {os.geteuid()}",
                 fix="run the agent as root (runc and CRIU need it): sudo torpor ...")


def check_kernel() -> Check:
    release = platform.release()
    nums = tuple(int(x) for x in re.findall(r"\d+", release)[:2])
    ok = nums >= (5, 10)
    return Check(name="kernel", ok=ok, detail=f"Linux {release}",
                 fix="torpor needs Linux >= 5.10 (time namespaces, clone3, pidfd)")


def check_criu(explicit: str | None = None, tools_dir: Path = Path("/opt/torpor")) -> Check:
    from torpor.agent._criu import criu_check, find_criu

    try:
        info = find_criu(explicit, tools_dir=tools_dir)
    except TorporError as exc:
        return Check(name="criu", ok=False, detail=str(exc), fix="make criu  (builds CRIU 4.2.1 into /opt/torpor)")
    result = criu_check(info.path)
    if not result.ok:
        last = result.output.splitlines()[-3:] if result.output else []
        return Check(name="criu", ok=False, detail=f"CRIU {info.version} at {info.path}: 'criu check' failed: " + " | ".join(last),
                     fix="see docs/troubleshooting.md; 'make criu' builds a CRIU known to work")
    return Check(name="criu", ok=True, detail=f"CRIU {info.version} at {info.path}: criu check: Looks good", notes=result.notes)


def check_runc() -> Check:
    path = shutil.which("runc")
    if not path:
        return Check(name="runc", ok=False, detail="runc not found", fix="apt-get install runc")
    code, out = _run([path, "--version"])
    version = out.splitlines()[0].split()[-1] if code == 0 and out else "unknown"
    return Check(name="runc", ok=code == 0, detail=f"runc {version} at {path}", fix="reinstall runc: apt-get install --reinstall runc")


def check_cgroups() -> Check:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return Check(name="cgroups", ok=True, detail="cgroup v2 (unified)")
    if (root / "memory").is_dir() and (root / "pids").is_dir():
        hybrid = " with a v2 hierarchy beside it (hybrid)" if (root / "unified").is_dir() else ""
        return Check(name="cgroups", ok=True, detail=f"cgroup v1{hybrid}")
    return Check(name="cgroups", ok=False, detail="no usable cgroup hierarchy under /sys/fs/cgroup",
                 fix="mount cgroup2 on /sys/fs/cgroup (systemd does this at boot)")


def check_overlayfs() -> Check:
    try:
        fs = Path("/proc/filesystems").read_text()
    except OSError:
        fs = ""
    ok = "overlay" in fs
    return Check(name="overlayfs", ok=ok, required=False,
                 detail="overlay filesystem available" if ok else "overlay filesystem not listed in /proc/filesystems",
                 fix="modprobe overlay (torpor's default root is bind mounts, so this is optional)")


def check_iptables() -> Check:
    path = shutil.which("iptables") or ("/usr/sbin/iptables" if os.path.exists("/usr/sbin/iptables") else None)
    if not path:
        return Check(name="iptables", ok=False, detail="iptables not found",
                     fix="apt-get install iptables (CRIU locks the network with it during a dump; agents firewall runs with it)")
    code, out = _run([path, "--version"])
    return Check(name="iptables", ok=code == 0, detail=out.splitlines()[0] if out else path,
                 fix="apt-get install --reinstall iptables")


def check_userns() -> Check:
    try:
        maxns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        maxns = -1
    ok = maxns != 0
    return Check(name="user namespaces", ok=ok, detail=f"max_user_namespaces={maxns}",
                 fix="sysctl -w user.max_user_namespaces=15000 (tasks run in their own user namespace)")


def check_db(url: str) -> Check:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
    except Exception as exc:
        return Check(name="postgres", ok=False, detail=f"cannot connect: {str(exc).strip().splitlines()[0]}",
                     fix="check --db (postgresql://user:pass@host:port/db) and that the server accepts connections")
    return Check(name="postgres", ok=True, detail=f"PostgreSQL {version} reachable")


def check_store(url: str, s3=None) -> Check:  # type: ignore[no-untyped-def]
    from torpor.store import open_store

    try:
        store = open_store(url, s3=s3)
        try:
            store.check()
        finally:
            store.close()
    except TorporError as exc:
        return Check(name="store", ok=False, detail=str(exc), fix="check --store and its credentials/endpoint")
    return Check(name="store", ok=True, detail=f"{store.url} reachable and writable")


def run_checks(*, criu: str | None = None, db: str | None = None, store: str | None = None, s3=None,  # type: ignore[no-untyped-def]
               tools_dir: Path = Path("/opt/torpor")) -> list[Check]:
    checks = [check_root(), check_kernel(), check_criu(criu, tools_dir), check_runc(), check_cgroups(), check_userns(),
              check_overlayfs(), check_iptables()]
    if db:
        checks.append(check_db(db))
    if store:
        checks.append(check_store(store, s3))
    return checks
