"""Secret files of `torpor dev`: 0600 from creation whatever the umask, kept across starts, tightened when loose."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from torpor._devsecrets import private_dir, read_or_create, write_private
from torpor._errors import ConfigError


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)  # the worst case: files would be created 0666 / dirs 0777 if the code relied on the umask
    yield
    os.umask(old)


def test_a_new_secret_is_0600_in_a_0700_directory_and_is_kept(tmp_path: Path, open_umask: None) -> None:
    notes: list[str] = []
    d = private_dir(tmp_path / "secrets", notes)
    assert _mode(d) == 0o700
    secret, created = read_or_create(d / "k", lambda: "s3cret", notes)
    assert (secret, created) == ("s3cret", True) and _mode(d / "k") == 0o600
    assert read_or_create(d / "k", lambda: "other", notes) == ("s3cret", False)
    assert notes == [] and [p.name for p in d.iterdir()] == ["k"]  # no temporary file left behind


def test_loose_modes_are_tightened_with_a_note(tmp_path: Path, open_umask: None) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o755)
    (d / "k").write_text("old-secret\n")
    (d / "k").chmod(0o644)
    notes: list[str] = []
    private_dir(d, notes)
    assert read_or_create(d / "k", lambda: "new", notes) == ("old-secret", False)
    assert _mode(d) == 0o700 and _mode(d / "k") == 0o600
    assert len(notes) == 2 and "was mode 0644" in notes[1] and "leaked" in notes[1], notes


def test_an_empty_file_gets_a_secret_and_a_rewrite_stays_0600(tmp_path: Path, open_umask: None) -> None:
    (tmp_path / "k").write_text("")
    assert read_or_create(tmp_path / "k", lambda: "fresh", []) == ("fresh", True)
    left = tmp_path / f".env.{os.getpid()}.tmp"  # a crash left the temporary file, world-readable
    left.write_text("x")
    left.chmod(0o666)
    write_private(tmp_path / "env", "A=1\n")
    assert (tmp_path / "env").read_text() == "A=1\n" and _mode(tmp_path / "env") == 0o600


def test_a_symlink_in_place_of_a_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x\n")
    (tmp_path / "k").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"):
        read_or_create(tmp_path / "k", lambda: "new", [])
