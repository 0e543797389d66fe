"""The Postgres cluster of ``torpor dev``: loopback only, and every connection gives a password.

Tasks are local processes, and a task in "host" network mode shares the
host's loopback, so the cluster trusts no local connection: TCP on
127.0.0.1 and the Unix socket alike use scram-sha-256 with a random password
kept in DATA_DIR/secrets/postgres-password (0600, in a 0700 directory). The
socket's directory is 0700 and owned by postgres as well. The coordinator
gets the password inside its DSN through its environment (TORPOR_DB), which
only root can read, never on its command line, which every user can.

A cluster made by an older ``torpor dev`` (``initdb -A trust``) is upgraded
in place at start: the ``postgres`` role gets the password and pg_hba.conf
is rewritten; its databases are not touched.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from torpor._devsecrets import read_or_create, write_private
from torpor._errors import ConfigError, TorporError

PASSWORD_FILE = "postgres-password"

HBA = """\
# Written by torpor dev at each start (edits here are lost): every connection, TCP or Unix
# socket, gives the password in DATA_DIR/secrets/postgres-password (user postgres).
local  all  all                 scram-sha-256
host   all  all  127.0.0.1/32   scram-sha-256
host   all  all  ::1/128        scram-sha-256
"""


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ConfigError("PostgreSQL is not installed: apt-get install postgresql (make demo installs it)")
    return Path(found[-1]).parent


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What Postgres stores for a scram-sha-256 password (RFC 5802/7677, as ``PQencryptPasswordConn``).

    The role's password is set from this, not from the password itself, so
    the clear password is never in a statement Postgres could log or echo in
    an error. ``password`` must be ASCII (SASLprep leaves it unchanged).
    """
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def _trusts(hba: str) -> bool:
    return any("trust" in line.split() for line in hba.splitlines() if not line.lstrip().startswith("#"))


class DevPostgres:
    """One cluster at ``data``, its password in ``secrets_dir``; ``log_path`` is named in errors."""

    def __init__(self, *, data: Path, secrets_dir: Path, log_path: Path) -> None:
        self.data = data
        self.password_file = secrets_dir / PASSWORD_FILE
        self.log_path = log_path
        self.sock_dir = data.parent / "postgres.sock"
        self.port = 0
        self._password = ""

    def url(self, db: str = "torpor") -> str:
        """The DSN with the password in it: hand it over in an environment variable or a 0600 file only."""
        return f"postgresql://postgres:{self._password}@127.0.0.1:{self.port}/{db}"

    def prepare(self, notes: list[str]) -> None:
        """Make the cluster, or upgrade one made before; say in ``notes`` what changed that a user should know."""
        pg = pg_bin()
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._initdb(pg)
        self._password, created = read_or_create(self.password_file, lambda: secrets.token_urlsafe(32), notes)
        stale = self.data / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # a previous run was killed; the caller holds the data dir's lock, so no server is left
        hba = self.data / "pg_hba.conf"
        old = hba.read_text() if hba.exists() else ""
        if fresh or created or old != HBA:
            # Password first, pg_hba.conf last: a start cut short in between does it all again next time.
            self._set_password(pg)
            write_private(hba, HBA)
            shutil.chown(hba, "postgres", "postgres")
            if not fresh and _trusts(old):
                notes.append(f"upgraded the dev Postgres in {self.data} from trust to password authentication "
                             f"(scram-sha-256); the password is in {self.password_file}; no data was changed")
            elif not fresh and created:
                notes.append(f"set a new password on the dev Postgres in {self.data}: {self.password_file} "
                             "was missing")
        self.sock_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(self.sock_dir, "postgres", "postgres")
        os.chmod(self.sock_dir, 0o700)

    def command(self, port: int) -> list[str]:
        """The server's command line (run it as postgres): ``port`` on 127.0.0.1 and the socket, nothing else."""
        self.port = port
        return [str(pg_bin() / "postgres"), "-D", str(self.data), "-p", str(port), "-h", "127.0.0.1",
                "-k", str(self.sock_dir)]

    def _as_postgres(self, args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, user="postgres", group="postgres",
                              extra_groups=[], cwd=self.data)

    def _initdb(self, pg: Path) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, "postgres", "postgres")
        # trust only until _set_password: the cluster does not run before pg_hba.conf is replaced.
        out = self._as_postgres([str(pg / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                 "-E", "UTF8"])
        if out.returncode != 0:
            raise TorporError(f"initdb failed: {out.stderr.strip()[-1000:]}")

    def _set_password(self, pg: Path) -> None:
        """Single-user mode needs no connection, so it works whatever pg_hba.conf says."""
        statement = f"ALTER ROLE postgres PASSWORD '{scram_verifier(self._password)}';\n"
        out = self._as_postgres([str(pg / "postgres"), "--single", "-D", str(self.data), "postgres"], statement)
        if out.returncode != 0 or "ERROR:" in out.stderr:
            raise TorporError(f"could not set the password of the dev Postgres in {self.data} "
                              f"(postgres --single): {out.stderr.strip()[-1000:]}")

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Wait until the server answers, then make the ``torpor`` database if it is not there yet."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=2) as conn:
                    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'torpor'").fetchone():
                        conn.execute("CREATE DATABASE torpor")
                return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise TorporError(f"the dev Postgres refused the password in {self.password_file}; "
                                      "remove that file and start again to set a new one") from None
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TorporError(f"PostgreSQL did not start; see {self.log_path}") from None
                time.sleep(0.2)
