"""The copy of torpor's own code that containers import.

Containers get the host's /usr (and so its /usr/bin/python3), but not the
agent's virtualenv: that may live under a directory the task's unprivileged
user cannot traverse (a pyenv under /root, say), and CRIU restores bind mounts
from inside the task's user namespace. So the agent copies the few packages the
in-container runtime needs (torpor itself and protobuf) into a world-readable
directory of its own, bound read-only at RUNTIME_DIR in every container.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

RUNTIME_DIR = "/opt/torpor/runtime"


def _package_dirs() -> dict[str, Path]:
    import google.protobuf

    import torpor

    return {
        "torpor": Path(torpor.__file__).resolve().parent,
        "google/protobuf": Path(google.protobuf.__file__).resolve().parent,
    }


def _fingerprint(dirs: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name, root in sorted(dirs.items()):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if f.endswith(".pyc"):
                    continue
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{name}:{os.path.relpath(dirpath, root)}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def prepare_runtime_dir(base: Path) -> Path:
    """Return ``base/<fingerprint>`` holding the runtime packages, creating it if needed."""
    dirs = _package_dirs()
    target = base / _fingerprint(dirs)
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".rt.", dir=base))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, src in dirs.items():
        shutil.copytree(src, tmp / name, ignore=ignore)
    for dirpath, dirnames, filenames in os.walk(tmp):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
