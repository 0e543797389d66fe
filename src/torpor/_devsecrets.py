"""Files that hold secrets for ``torpor dev``: created mode 0600 in a 0700 directory, never looser.

A file is written under a temporary name with mode 0600 from its creation
and renamed into place, so no reader ever sees it with the umask's mode or
half written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from torpor._errors import ConfigError


def private_dir(path: Path, notes: list[str]) -> Path:
    """``path`` as a directory only its owner (root) may enter; one made looser before is tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700, notes)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may be left over from a crash, with whatever mode
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_or_create(path: Path, make: Callable[[], str], notes: list[str]) -> tuple[str, bool]:
    """The secret in ``path`` (its first line), made by ``make`` and written if there is none yet.

    Returns (secret, created). An existing file keeps its content, so keys
    and passwords survive a restart; its mode is brought to 0600 if it was
    looser, with a note saying so.
    """
    try:
        existing = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        existing = []
    if existing:
        _tighten(path, 0o600, notes)
        return existing[0], False
    secret = make()
    write_private(path, secret + "\n")
    return secret, True


def _tighten(path: Path, mode: int, notes: list[str]) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{path} is a symbolic link; torpor dev keeps secrets only in files it made (remove it)")
    if stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, mode)
        notes.append(f"{path} was mode {stat.S_IMODE(st.st_mode):04o}, readable by others; made it {mode:04o} "
                     "(if other users could read it, treat what it holds as leaked)")
