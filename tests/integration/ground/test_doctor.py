"""torpor doctor on this machine, through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import need_root

TORPOR = [sys.executable, "-m", "torpor.cli"]


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TORPOR, "doctor", *args], capture_output=True, text=True, timeout=120)


def test_doctor_passes_on_a_prepared_host() -> None:
    need_root()
    proc = doctor("--json")
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if c["required"] and not c["ok"]]
    assert proc.returncode == 0 and report["ok"], failed
    names = {c["name"] for c in report["checks"]}
    assert {"root", "kernel", "criu", "runc", "cgroups", "overlayfs", "iptables"} <= names
    criu = next(c for c in report["checks"] if c["name"] == "criu")
    assert "Looks good" in criu["detail"] and "4.2" in criu["detail"]


def test_doctor_fails_with_a_fix_for_a_bad_criu(tmp_path: Path) -> None:
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'Version: 3.17.1'\n")
    fake.chmod(0o755)
    proc = doctor("--criu", str(fake))
    assert proc.returncode == 1
    line = next(l for l in proc.stdout.splitlines() if " criu " in f" {l} ")
    assert "FAIL" in line and "3.17.1" in line and "too old" in line
    assert "fix: make criu" in proc.stdout


def test_doctor_checks_db_and_store_when_asked(tmp_path: Path) -> None:
    proc = doctor("--json", "--db", "postgresql://nobody@127.0.0.1:1/none", "--store", f"file://{tmp_path}/store")
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert not by_name["postgres"]["ok"] and "cannot connect" in by_name["postgres"]["detail"]
    assert by_name["store"]["ok"], by_name["store"]
    assert proc.returncode == 1
