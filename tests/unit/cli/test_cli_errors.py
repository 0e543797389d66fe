"""Every CLI error is one clear line and exit 1; --debug shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port
from torpor._devstack import DevConfig, DevStack, running_pid, stop_running
from torpor._errors import ConfigError
from torpor.cli import cli

ROOT = Path(__file__).resolve().parents[3]


def _torpor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TORPOR_")}
    return subprocess.run([sys.executable, "-m", "torpor.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


def test_unreachable_coordinator_names_the_address_and_suggests_torpor_dev():
    address = f"127.0.0.1:{free_port()}"
    proc = _torpor("runs", "show", "run_x", "--address", address)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("Error: UNAVAILABLE: cannot reach the coordinator at " + address), proc.stderr
    assert "torpor dev" in proc.stderr


def test_debug_shows_the_traceback():
    proc = _torpor("--debug", "runs", "show", "run_x", "--address", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RPCError" in proc.stderr
    env_proc = _torpor("runs", "show", "run_x", "--address", f"127.0.0.1:{free_port()}", env={"TORPOR_DEBUG": "1"})
    assert "Traceback" in env_proc.stderr


def test_a_users_mistake_is_one_line(tmp_path):
    (tmp_path / "torpor.toml").write_text('project = "x"\nmodules = ["tasks"]\nbogus = 1\n')
    proc = _torpor("deploy", str(tmp_path), "--address", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and "unknown setting(s) bogus" in proc.stderr


def test_an_unexpected_exception_is_reported_as_a_bug_in_one_line(monkeypatch):
    import torpor.client._client as client_mod

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(client_mod.Client, "get_run", boom)
    result = CliRunner().invoke(cli, ["runs", "show", "run_x"])
    assert result.exit_code == 1
    assert "internal error: ZeroDivisionError: division by zero" in result.output and "--debug" in result.output
    with pytest.raises(ZeroDivisionError):
        CliRunner().invoke(cli, ["--debug", "runs", "show", "run_x"], catch_exceptions=False)


def test_tokens_complete_needs_exactly_one_of_token_or_run():
    for args in ([], ["tok_1", "--run", "run_1"]):
        result = CliRunner().invoke(cli, ["tokens", "complete", *args])
        assert result.exit_code == 2 and "either TOKEN or --run" in result.output


def test_one_torpor_dev_per_data_dir(tmp_path):
    """The lock that `torpor dev --stop` and a second `torpor dev` rely on."""
    data = tmp_path / "data"
    data.mkdir()
    assert running_pid(data) is None and stop_running(data) is None
    first = DevStack(DevConfig(data_dir=data))
    first._lock()
    try:
        assert running_pid(data) == os.getpid()
        with pytest.raises(ConfigError, match=r"already running on .* \(pid \d+\); stop it with: torpor dev --stop"):
            DevStack(DevConfig(data_dir=data))._lock()
    finally:
        first._unlock()
    assert running_pid(data) is None  # released with the descriptor; a stale pid in the file counts for nothing
    assert (data / "dev.lock").read_text().strip() == str(os.getpid())


def test_dev_stop_signals_the_holder_and_waits_for_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # A stand-in holder: takes the lock as torpor dev does and exits on SIGTERM.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from torpor._devstack import DevConfig, DevStack\n"
        "s = DevStack(DevConfig(data_dir=Path(sys.argv[1]))); s._lock(); print('locked', flush=True)\n"
        "time.sleep(60)"), str(data)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert running_pid(data) == holder.pid
        result = CliRunner().invoke(cli, ["dev", "--stop", "--data-dir", str(data)])
        assert result.exit_code == 0 and f"stopped torpor dev (pid {holder.pid})" in result.output
        assert holder.wait(timeout=10) != 0 and running_pid(data) is None
        again = CliRunner().invoke(cli, ["dev", "--stop", "--data-dir", str(data)])
        assert again.exit_code == 0 and "no torpor dev is running" in again.output
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_make_install_links_torpor_onto_path(tmp_path):
    """scripts/setup.sh link: what `make demo` / `make install` run so the README's `torpor` resolves."""
    venv_torpor = ROOT / ".venv" / "bin" / "torpor"
    assert venv_torpor.exists(), "run `make setup` first"
    bindir = tmp_path / "bin"

    def link() -> str:
        proc = subprocess.run([str(ROOT / "scripts" / "setup.sh"), "link"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TORPOR_BIN_DIR": str(bindir)}, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert "linked" in link()
    assert os.readlink(bindir / "torpor") == str(venv_torpor)
    assert "present" in link()  # idempotent
    version = subprocess.run([str(bindir / "torpor"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "torpor, version" in version.stdout
    (bindir / "torpor").unlink()
    (bindir / "torpor").symlink_to("/nonexistent/other-checkout/.venv/bin/torpor")
    assert "linked" in link() and os.readlink(bindir / "torpor") == str(venv_torpor)  # re-pointed here
    (bindir / "torpor").unlink()
    (bindir / "torpor").write_text("#!/bin/sh\necho mine\n")
    assert "leaving it alone" in link()
    assert (bindir / "torpor").read_text() == "#!/bin/sh\necho mine\n"


def test_a_reader_that_goes_away_stops_the_command_quietly(tmp_path):
    """`torpor ... | head`: no "Error: Broken pipe", no "Exception ignored" noise."""
    (tmp_path / "torpor.toml").write_text('project = "many"\nmodules = ["tasks"]\n')
    for i in range(3000):  # the listing is far larger than a pipe's buffer
        (tmp_path / f"file_{i:05d}.txt").write_text("x")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TORPOR_")}
    proc = subprocess.Popen([sys.executable, "-m", "torpor.cli", "deploy", "--dry-run", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""
