"""Finding CRIU, checking it, and quoting its logs when it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from torpor._errors import ConfigError

MIN_VERSION = (4, 2)
# Where native/build-criu.sh puts the CRIU it built or chose.
DEFAULT_TOOLS_DIR = Path("/opt/torpor")

_WHY_42 = (
    "CRIU >= 4.2 is needed: 3.17 does not start on current kernels and 4.1 cannot dump "
    "inet sockets on kernels >= 6.16; run 'make criu' (native/build-criu.sh) to build 4.2.1"
)


@dataclass(frozen=True, kw_only=True)
class CriuInfo:
    path: str
    """Absolute path of the criu binary (passed to runc with --criu)."""
    version: str
    """As printed by ``criu --version``, e.g. ``4.2.1``."""

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _parse_version(self.version)


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def criu_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as exc:
        raise ConfigError(f"cannot run CRIU at {path}: {exc}") from exc
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise ConfigError(f"{path} --version printed no version: {out.strip()!r}")
    return m.group(1)


def find_criu(explicit: str | None = None, *, tools_dir: Path = DEFAULT_TOOLS_DIR) -> CriuInfo:
    """The CRIU to use: ``explicit`` if given, else the one native/ installed, else PATH.

    Never relies on PATH order alone: a PATH criu older than 4.2 is refused with
    the reason rather than silently used.
    """
    candidates: list[str] = []
    if explicit:
        candidates = [explicit]
    else:
        candidates.append(str(tools_dir / "bin" / "criu"))
        on_path = shutil.which("criu")
        if on_path:
            candidates.append(on_path)
    problems = []
    for cand in candidates:
        if not os.access(cand, os.X_OK):
            problems.append(f"{cand}: not found or not executable")
            continue
        version = criu_version(cand)
        info = CriuInfo(path=os.path.realpath(cand), version=version)
        if info.version_tuple < MIN_VERSION:
            problems.append(f"{cand}: CRIU {version} is too old")
            continue
        return info
    raise ConfigError("no usable CRIU (" + "; ".join(problems or ["none found"]) + "). " + _WHY_42)


@dataclass(frozen=True, kw_only=True)
class CriuCheck:
    ok: bool
    output: str
    notes: list[str]


def criu_check(path: str) -> CriuCheck:
    """Run ``criu check``. Warnings such as "Dirty tracking is OFF" become notes."""
    proc = subprocess.run([path, "check"], capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    notes = [line.strip() for line in output.splitlines() if line.startswith("Warn") or "is OFF" in line]
    return CriuCheck(ok=proc.returncode == 0 and "Looks good" in output, output=output, notes=notes)


def log_excerpt(log_path: str | os.PathLike[str], *, context: int = 3, limit: int = 12) -> str:
    """The ``Error`` lines of a CRIU log, each with ``context`` lines before it.

    CRIU logs are long; the few lines around the first errors are what tells a
    person what went wrong (runc's logCriuErrors does the same).
    """
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    picked: list[int] = []
    for i, line in enumerate(lines):
        if "Error" in line or "error (" in line:
            picked.extend(range(max(0, i - context), i + 1))
    if not picked:
        return "\n".join(lines[-context * 3 :])
    seen: set[int] = set()
    out: list[str] = []
    error_count = 0
    for i in picked:
        if i in seen:
            continue
        seen.add(i)
        out.append(lines[i])
        if "Error" in lines[i]:
            error_count += 1
            if error_count >= limit:
                break
    return "\n".join(out)
