"""The shipped systemd units are valid, checked by systemd itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import need

TORPOR = [sys.executable, "-m", "torpor.cli"]


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", ["agent", "coordinator"])
def test_installed_unit_passes_systemd_analyze_verify(kind: str, tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze (Debian package systemd)")
    subprocess.run([*TORPOR, "install-service", kind, "--unit-dir", str(tmp_path / "units"),
                    "--config-dir", str(tmp_path / "etc")], check=True, capture_output=True)
    unit = tmp_path / "units" / f"torpor-{kind}.service"
    text = unit.read_text()
    assert "@TORPOR@" not in text and f" {kind}" in text
    exec_bin = next(l for l in text.splitlines() if l.startswith("ExecStart=")).split("=", 1)[1].split()[0]
    assert Path(exec_bin).is_absolute() and Path(exec_bin).exists(), exec_bin
    proc = verify(unit)
    assert proc.returncode == 0, proc.stderr
    assert unit.name not in proc.stderr, proc.stderr
    assert (tmp_path / "etc" / f"{kind}.env").exists()


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    """Control: the check above can fail."""
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")
    bad = tmp_path / "torpor-broken.service"
    bad.write_text("[Service]\nType=bogus\nExecStart=relative/path\n")
    proc = verify(bad)
    assert proc.returncode != 0 or "bogus" in proc.stderr or "relative" in proc.stderr
