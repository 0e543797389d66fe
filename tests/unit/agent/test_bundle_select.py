"""What a deployment bundle holds: the project's code and data, never torpor's state, caches or ignored files."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner
from helpers import free_port

from torpor import ConfigError
from torpor.agent import _bundle
from torpor.cli import cli
from torpor.sdk._project import load_project

TOML = 'project = "demo"\nmodules = ["tasks"]\n'


def write(root: Path, rel: str, data: str | bytes = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    write(root, "torpor.toml", TOML)
    write(root, "tasks.py", "X = 1\n")
    return root


def paths(root: Path, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.path for f in _bundle.select_files(root, **kw)]


def tar_names(blob: bytes) -> list[str]:
    data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=_bundle.MAX_BUNDLE_BYTES * 2)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def add_dev_state(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `torpor dev` leaves in a project: a Postgres socket, snapshots, keys; plus a FIFO elsewhere."""
    write(root, ".torpor/client.env", "TORPOR_API_KEY=tpk_secret\n")
    write(root, ".torpor/store/snapshots/s1/pages.img", b"\0" * 1000)
    monkeypatch.chdir(root / ".torpor")  # a relative bind keeps the socket path under the 107-byte limit
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(".s.PGSQL.5432")
    sock.close()
    monkeypatch.chdir(root)
    os.mkfifo(root / "pipe")
    (root / "sub").mkdir(exist_ok=True)
    os.mkfifo(root / "sub" / "pipe")


def test_dev_state_sockets_and_fifos_are_not_packaged(proj, monkeypatch):
    add_dev_state(proj, monkeypatch)
    assert (proj / ".torpor" / ".s.PGSQL.5432").is_socket()
    assert paths(proj) == ["tasks.py", "torpor.toml"]
    _, blob = _bundle.build(proj)  # used to fail with ENXIO opening the socket
    assert tar_names(blob) == ["tasks.py", "torpor.toml"]


def test_environments_vcs_and_caches_are_skipped_anywhere(proj):
    for rel in [".venv/lib/site.py", "venv/bin/python", ".git/HEAD", ".hg/store", "__pycache__/tasks.cpython-311.pyc",
                "lib/__pycache__/m.pyc", "lib/old.pyc", "lib/old.pyo", ".mypy_cache/x", ".pytest_cache/x",
                ".ruff_cache/x", "node_modules/a/index.js", "lib/.venv/x.py", "lib/.git"]:  # .git file: a worktree
        write(proj, rel)
    write(proj, "lib/m.py")
    assert paths(proj) == ["tasks.py", "torpor.toml", "lib/m.py"]


def test_gitignore_top_level_and_nested_with_git_semantics(proj):
    write(proj, ".gitignore", "*.log\nbuild/\n/secret.txt\n")
    write(proj, "sub/.gitignore", "!keep.log\nlocal/\n")
    for rel in ["a.log", "secret.txt", "build/out.bin", "sub/keep.log", "sub/other.log", "sub/secret.txt",
                "sub/build", "sub/local/x.py", "local/x.py"]:
        write(proj, rel)
    assert sorted(paths(proj)) == sorted([
        ".gitignore", "tasks.py", "torpor.toml",
        "local/x.py",  # sub/'s "local/" is relative to sub/
        "sub/.gitignore", "sub/keep.log",  # re-included by the nested "!keep.log"
        "sub/build",  # "build/" matches directories only
        "sub/secret.txt",  # "/secret.txt" is anchored to the top
    ])


def test_excluded_directories_are_not_descended_into(proj, monkeypatch):
    write(proj, ".gitignore", "data/\n")
    write(proj, "data/big.bin")
    write(proj, "data/.gitignore", "!*\n")  # as in git, nothing inside an excluded directory comes back
    listed: list[str] = []
    real = os.scandir

    def spy(path):  # type: ignore[no-untyped-def]
        listed.append(os.path.relpath(path, proj))
        return real(path)

    monkeypatch.setattr(_bundle.os, "scandir", spy)
    assert paths(proj) == [".gitignore", "tasks.py", "torpor.toml"]
    assert listed == ["."]


def test_exclude_from_torpor_toml_adds_to_gitignore(proj):
    write(proj, "torpor.toml", TOML + 'exclude = ["data/", "*.csv", "!keep.csv"]\n')
    write(proj, ".gitignore", ".env\n")
    for rel in [".env", "data/x.py", "a.csv", "keep.csv", "lib/b.csv", "lib/c.py"]:
        write(proj, rel)
    project = load_project(proj)
    assert project.exclude == ("data/", "*.csv", "!keep.csv")
    assert paths(proj, exclude=project.exclude) == [".gitignore", "keep.csv", "tasks.py", "torpor.toml", "lib/c.py"]
    # "!" in exclude re-includes only what exclude left out; .gitignore's .env stays out.
    assert ".env" not in paths(proj, exclude=["!.env"])


def test_symlinks_are_refused_unless_excluded(proj):
    (proj / "link.py").symlink_to(proj / "tasks.py")
    with pytest.raises(ConfigError, match=r"link\.py is a symbolic link"):
        _bundle.select_files(proj)
    (proj / "link.py").unlink()
    (proj / "shared").symlink_to(proj.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match="shared is a symbolic link"):
        _bundle.select_files(proj)
    write(proj, ".gitignore", "shared/\n")
    assert paths(proj) == [".gitignore", "tasks.py", "torpor.toml"]


def test_over_the_limit_is_refused_before_reading_and_names_the_largest_files(proj, monkeypatch):
    write(proj, "data/big.bin", b"\0" * (3 << 20))
    write(proj, "data/mid.bin", b"\0" * (2 << 20))
    write(proj, "model.pt", b"\0" * (1 << 20))

    def no_reading(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("file contents were read")

    monkeypatch.setattr(_bundle, "pack", no_reading)
    with pytest.raises(ConfigError) as exc:
        _bundle.build(proj, max_bytes=2 << 20)
    msg = str(exc.value)
    assert "6.0 MB" in msg and "limit of 2.0 MB" in msg
    assert msg.index("3.0 MB  data/big.bin") < msg.index("2.0 MB  data/mid.bin") < msg.index("1.0 MB  model.pt")
    assert "max_bundle_mb = 7" in msg and 'exclude = ["data/"]' in msg and ".gitignore" in msg


def test_limit_is_checked_against_the_ceiling(proj):
    with pytest.raises(ConfigError, match="out of range"):
        _bundle.build(proj, max_bytes=_bundle.MAX_BUNDLE_BYTES + 1)


def test_same_files_same_version_and_ignored_files_do_not_change_it(proj, tmp_path, monkeypatch):
    write(proj, "lib/m.py", "Y = 2\n")
    os.chmod(write(proj, "bin/run.sh", "#!/bin/sh\n"), 0o755)
    v1, blob = _bundle.build(proj)
    assert _bundle.build(proj)[0] == v1
    # The dry run's list is exactly what is packaged, in the same order.
    assert tar_names(blob) == paths(proj) == ["tasks.py", "torpor.toml", "bin/run.sh", "lib/m.py"]
    write(proj, ".gitignore", "*.log\n")
    v2 = _bundle.build(proj)[0]
    assert v2 != v1  # .gitignore is part of the project
    write(proj, "debug.log", "noise")
    add_dev_state(proj, monkeypatch)
    write(proj, ".venv/x.py")
    assert _bundle.build(proj)[0] == v2
    write(proj, "lib/m.py", "Y = 3\n")
    assert _bundle.build(proj)[0] != v2


def run_cli(*args: str):  # type: ignore[no-untyped-def]
    # A port nothing listens on: any call to a coordinator would fail the command.
    return CliRunner().invoke(cli, ["deploy", "--address", f"127.0.0.1:{free_port()}", *args])


def test_dry_run_lists_files_and_totals_without_a_coordinator(proj, monkeypatch):
    write(proj, "tasks.py", "raise SystemExit('task code must not be imported by a dry run')\n")
    write(proj, "lib/data.bin", b"\0" * 2048)
    add_dev_state(proj, monkeypatch)
    result = run_cli("--dry-run", str(proj))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    size = len((proj / "tasks.py").read_bytes())
    toml = len(TOML)
    assert [line.split() for line in lines[:-1]] == [[str(size), "tasks.py"], [str(toml), "torpor.toml"],
                                                     ["2,048", "lib/data.bin"]]
    assert lines[-1] == f"3 file(s), {size + toml + 2048:,} bytes (0.0 MB of the 50 MB limit)"


def test_dry_run_json(proj):
    result = run_cli("--dry-run", "--json", str(proj))
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out == {"project": "demo", "files": [{"path": "tasks.py", "size": 6}, {"path": "torpor.toml", "size": len(TOML)}],
                   "total_bytes": 6 + len(TOML), "file_count": 2}


def test_dry_run_applies_the_limit(proj):
    write(proj, "torpor.toml", TOML + "max_bundle_mb = 1\n")
    write(proj, "big.bin", b"\0" * (2 << 20))
    result = run_cli("--dry-run", str(proj))
    assert result.exit_code == 1
    assert "over the limit of 1.0 MB" in result.output and "big.bin" in result.output
