"""`torpor dev --detach` / `--stop` on a data dir under a private (0700) parent, as `mktemp -d` and /root are."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e_support import _need_stack, runc_list_at
from helpers import assert_eventually, free_port

CLI = [sys.executable, "-m", "torpor.cli"]


def _torpor(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TORPOR_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**clean, **(env or {})})


def test_detached_dev_in_a_private_directory_starts_refuses_a_second_and_stops():
    _need_stack()
    private = Path(tempfile.mkdtemp(prefix="torpor-private-"))  # 0700: postgres and the task user cannot enter
    assert private.stat().st_mode & 0o777 == 0o700
    data = private / "data"
    shared = Path("/var/lib/torpor/dev") / hashlib.sha256(str(data).encode()).hexdigest()[:10]
    port = str(free_port())
    try:
        up = _torpor("dev", "--detach", "--data-dir", str(data), "--port", port)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "torpor dev is running" in up.stdout and f"state {shared}/agents/dev-agent-1" in up.stdout
        assert (shared / "postgres" / "PG_VERSION").exists()  # the cluster lives where postgres can reach it
        env = dict(line.split("=", 1) for line in (data / "client.env").read_text().split())
        assert_eventually(lambda: [a["alive"] for a in json.loads(_torpor("agents", "list", "--json", env=env).stdout)]
                          == [True], timeout=60)

        again = _torpor("dev", "--detach", "--data-dir", str(data), "--port", str(free_port()))
        assert again.returncode == 1 and "already running on" in again.stderr and "torpor dev --stop" in again.stderr
        assert "Traceback" not in again.stderr
        foreground = _torpor("dev", "--data-dir", str(data), "--port", str(free_port()))
        assert foreground.returncode == 1 and "already running on" in foreground.stderr

        down = _torpor("dev", "--stop", "--data-dir", str(data))
        assert down.returncode == 0 and "stopped torpor dev" in down.stdout, down.stderr
        gone = _torpor("agents", "list", env=env)
        assert gone.returncode == 1 and "cannot reach the coordinator" in gone.stderr
        assert runc_list_at(shared / "agents" / "dev-agent-1") == []
        # The data dir starts again, as it was.
        up2 = _torpor("dev", "--detach", "--data-dir", str(data), "--port", port)
        assert up2.returncode == 0, up2.stdout + up2.stderr
    finally:
        _torpor("dev", "--stop", "--data-dir", str(data))
        for c in runc_list_at(shared / "agents" / "dev-agent-1"):
            subprocess.run(["runc", "--root", str(shared / "agents" / "dev-agent-1" / "runc"), "delete", "-f", c["id"]])
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)
