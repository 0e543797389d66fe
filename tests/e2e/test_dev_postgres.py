"""The dev stack's own services are protected: `torpor dev`'s Postgres asks every connection for a password
(a task on the host's loopback gets nothing without it), and every secret it writes is root's alone."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import psutil
import psycopg
import pytest

from e2e_support import Stack, _need_stack
from helpers import assert_eventually, free_port

from torpor._devpg import pg_bin



def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _refused(dsn: str) -> str:
    # passfile=/dev/null: no ~/.pgpass of whoever runs the tests may supply a password behind our back.
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(dsn, connect_timeout=5, passfile="/dev/null").close()
    return str(err.value)


def _coordinator_of(stack: Stack) -> psutil.Process:
    api_keys = str(stack.dir.resolve() / "secrets" / "api-keys")
    found = [p for p in psutil.process_iter(["cmdline"]) if "coordinator" in (p.info["cmdline"] or [])
             and api_keys in (p.info["cmdline"] or [])]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def devdir() -> Iterator[Path]:
    _need_stack()
    d = Path(tempfile.mkdtemp(prefix="torpor-e2e-devpg-", dir="/var/tmp"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_dev_postgres_wants_the_password_and_the_secrets_are_roots_alone(devdir: Path):
    stack = Stack(devdir / "data", free_port(), 1)
    try:
        stack.start()
        data = stack.dir
        pg_port = int((data / "postgres.port").read_text())
        password = (data / "secrets" / "postgres-password").read_text().strip()
        assert len(password) >= 40

        # Over TCP, as any local process (a task in "host" network mode) would: no password, a wrong one.
        assert "password" in _refused(f"postgresql://postgres@127.0.0.1:{pg_port}/torpor")
        assert "password authentication failed" in _refused(f"postgresql://postgres:guess@127.0.0.1:{pg_port}/torpor")
        # The Unix socket asks too, even root; and its directory is closed to everyone but postgres.
        sock_dir = data / "postgres.sock"
        assert "password" in _refused(f"host={sock_dir} port={pg_port} user=postgres dbname=torpor")
        assert _mode(sock_dir) == 0o700 and sock_dir.owner() == "postgres"

        # The DSN the coordinator was given works, and reached it through its environment, not its command line.
        coordinator = _coordinator_of(stack)
        dsn = coordinator.environ()["TORPOR_DB"]
        assert password in dsn
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            rules = {r[0] for r in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
            assert rules == {"scram-sha-256"}, rules
            assert conn.execute("SELECT count(*) FROM api_keys").fetchone() is not None  # the coordinator's schema
        everyone_sees = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        assert not [c for c in everyone_sees if password in c]

        # Every secret is 0600 in a directory others cannot list.
        assert _mode(data / "secrets") == 0o700
        for name in ("api-keys", "join-tokens", "postgres-password"):
            assert _mode(data / "secrets" / name) == 0o600, name
        assert _mode(data / "client.env") == 0o600
        assert not _mode(data) & 0o044  # DATA_DIR itself: others may pass through (agents' bundles), not list
        assert _mode(data / "postgres") == 0o700
        assert "TORPOR_API_KEY=tp_" in (data / "client.env").read_text()
    finally:
        stack.stop()


def test_a_wrong_password_file_is_named_and_a_deleted_one_is_replaced(devdir: Path):
    data = devdir / "data"
    first, wrong, again = (Stack(data, free_port(), 1) for _ in range(3))
    pw_file = data / "secrets" / "postgres-password"
    try:
        first.start()
        first.stop()
        old_password = pw_file.read_text().strip()
        pw_file.write_text("not-the-password\n")
        with pytest.raises(AssertionError):
            wrong.start()
        assert f"the dev Postgres refused the password in {pw_file}; remove that file" in wrong.dev_log()

        pw_file.unlink()
        again.start()
        assert f"note: set a new password on the dev Postgres in {data / 'postgres'}" in again.dev_log()
        new_password = pw_file.read_text().strip()
        assert new_password != old_password and _mode(pw_file) == 0o600
        port = int((data / "postgres.port").read_text())
        assert "password authentication failed" in _refused(f"postgresql://postgres:{old_password}@127.0.0.1:{port}/torpor")
        assert again.cli("agents", "list").returncode == 0
    finally:
        for s in (first, wrong, again):
            s.stop()


def _old_trust_data_dir(data: Path) -> tuple[str, int]:
    """A DATA_DIR as torpor dev made it before passwords: `initdb -A trust`, the secrets, a port file.

    It holds the coordinator's schema and a client key made with `torpor keys create`; returns (key, port).
    """
    (data / "secrets").mkdir(parents=True, mode=0o700)
    for name in ("api-keys", "join-tokens"):
        (data / "secrets" / name).write_text("tp_from-the-old-days-" + name + "\n")
        (data / "secrets" / name).chmod(0o600)
    cluster = data / "postgres"
    cluster.mkdir(mode=0o700)
    shutil.chown(cluster, "postgres", "postgres")
    pg = pg_bin()
    as_pg = dict(user="postgres", group="postgres", extra_groups=[], cwd=cluster)
    subprocess.run([str(pg / "initdb"), "-D", str(cluster), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
                   check=True, capture_output=True, **as_pg)  # type: ignore[arg-type]
    port = free_port()
    (data / "postgres.port").write_text(str(port))
    server = subprocess.Popen([str(pg / "postgres"), "-D", str(cluster), "-p", str(port), "-h", "127.0.0.1",
                               "-k", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **as_pg)  # type: ignore[arg-type]
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}"
        conn = assert_eventually(lambda: _connect(f"{url}/postgres"), timeout=60)
        conn.execute("CREATE DATABASE torpor")
        conn.close()
        cli = [sys.executable, "-m", "torpor.cli"]
        subprocess.run([*cli, "migrate", "--db", f"{url}/torpor"], check=True, capture_output=True)
        key = subprocess.run([*cli, "keys", "create", "--db", f"{url}/torpor", "--name", "made before the upgrade"],
                             check=True, capture_output=True, text=True).stdout.strip()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    return key, port


def _connect(dsn: str) -> psycopg.Connection | None:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=2, passfile="/dev/null")
    except psycopg.OperationalError:
        return None


def test_an_old_trust_data_dir_is_upgraded_in_place_and_keeps_its_data(devdir: Path):
    data = devdir / "data"
    old_key, port = _old_trust_data_dir(data)
    assert "trust" in (data / "postgres" / "pg_hba.conf").read_text()
    first = Stack(data, free_port(), 1)
    second = Stack(data, first.port, 1)
    try:
        first.start()
        log = first.dev_log()
        assert log.count("upgraded the dev Postgres") == 1 and "from trust to password" in log, log
        assert int((data / "postgres.port").read_text()) == port  # the same cluster, on its port
        assert "password" in _refused(f"postgresql://postgres@127.0.0.1:{port}/torpor")
        assert _mode(data / "secrets" / "postgres-password") == 0o600
        # What the old cluster held is still there: the key made before the upgrade still opens the API.
        old = first.cli("agents", "list", "--json", "--api-key", old_key)
        assert old.returncode == 0 and "dev-agent-1" in old.stdout
        # The old secrets files are kept as they were.
        assert first.env["TORPOR_API_KEY"] == "tp_from-the-old-days-api-keys"
        first.stop()

        second.start()  # upgraded once: the next start says nothing and the password still works
        assert second.dev_log().count("upgraded the dev Postgres") == 1
        assert second.cli("agents", "list", "--json", "--api-key", old_key).returncode == 0
    finally:
        first.stop()
        second.stop()
