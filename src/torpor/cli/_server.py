"""Server verbs: ``torpor coordinator``, ``torpor migrate``, ``torpor keys``."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

from torpor._errors import TorporError
from torpor.cli._group import cli
from torpor.cli._sizes import BYTES


def _read_secrets(path: str | None) -> tuple[str, ...]:
    """One secret per line; blank lines and # comments are skipped."""
    if not path:
        return ()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))


_db_option = click.option("--db", "db_url", envvar="TORPOR_DB", required=True,
                          help="PostgreSQL URL of the torpor database (env TORPOR_DB).")


@cli.command("coordinator")
@_db_option
@click.option("--listen", default="127.0.0.1:7433", show_default=True, envvar="TORPOR_LISTEN", help="host:port to serve gRPC on.")
@click.option("--store", "store_url", envvar="TORPOR_STORE", default=None,
              help="Store URL (file:///dir or s3://bucket/prefix): where `torpor deploy` bundles are kept and released "
                   "snapshots deleted; needed for deploys.")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False), envvar="TORPOR_API_KEY_FILE",
              help="Extra client API keys, one per line, besides those created with `torpor keys create`.")
@click.option("--join-token-file", type=click.Path(exists=True, dir_okay=False), envvar="TORPOR_JOIN_TOKEN_FILE",
              help="Extra agent join tokens, one per line.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), envvar="TORPOR_TLS_CERT", help="PEM certificate to serve TLS with.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), envvar="TORPOR_TLS_KEY", help="PEM key of --tls-cert.")
@click.option("--no-auth", is_flag=True, help="Accept unauthenticated calls (local development only).")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              envvar="TORPOR_LEASE",
              help="Agent lease, seconds: a host silent this long is lost and its runs move; agents freeze their "
                   "containers after 0.8 x this without a confirmed renewal (env TORPOR_LEASE).")
@click.option("--heartbeat", "heartbeat_seconds", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              envvar="TORPOR_HEARTBEAT", help="Agent heartbeat period, seconds (env TORPOR_HEARTBEAT).")
@click.option("--pool-size", type=click.IntRange(min=2), default=16, show_default=True, envvar="TORPOR_POOL_SIZE",
              help="Most Postgres connections (env TORPOR_POOL_SIZE).")
@click.option("--orphan-sweep", "orphan_sweep_seconds", type=click.FloatRange(min=0), default=600.0,
              show_default=True, envvar="TORPOR_ORPHAN_SWEEP",
              help="Seconds between two sweeps of the store for snapshots no checkpoint names; 0: never "
                   "(env TORPOR_ORPHAN_SWEEP).")
@click.option("--orphan-grace", "orphan_grace_seconds", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, envvar="TORPOR_ORPHAN_GRACE",
              help="Age a snapshot no checkpoint names must reach before the sweep deletes it; longer than any "
                   "upload plus a lease (env TORPOR_ORPHAN_GRACE).")
@click.option("--log-budget", "log_budget", type=BYTES, default="16MiB", show_default=True,
              envvar="TORPOR_LOG_BUDGET",
              help="Output one attempt of a run may keep in its logs, over all its hosts; agents drop the rest "
                   "and a marker line counts it (env TORPOR_LOG_BUDGET).")
@click.option("--max-children", type=click.IntRange(min=1), default=10_000, show_default=True,
              envvar="TORPOR_MAX_CHILDREN",
              help="Child runs one run may trigger over its life; a trigger past it raises LimitExceeded in the "
                   "task (env TORPOR_MAX_CHILDREN).")
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations at start.")
@click.option("--snapshot-key-file", type=click.Path(dir_okay=False), envvar="TORPOR_SNAPSHOT_KEY_FILE",
              help="The key agents encrypt snapshots with: 32 random bytes as 64 hex digits or base64, in a file "
                   "readable by its owner only (mode 0600 or 0400). Without it, a key generated once and kept in "
                   "Postgres (env TORPOR_SNAPSHOT_KEY_FILE).")
@click.option("--snapshot-old-key-file", "old_key_files", multiple=True, type=click.Path(dir_okay=False),
              envvar="TORPOR_SNAPSHOT_OLD_KEY_FILES",
              help="Repeatable: an older snapshot key, used only to open snapshots made before a rotation "
                   "(env TORPOR_SNAPSHOT_OLD_KEY_FILES, paths separated by ':').")
def coordinator_cmd(db_url: str, listen: str, store_url: str | None, api_key_file: str | None, join_token_file: str | None,
                    tls_cert: str | None, tls_key: str | None, no_auth: bool, lease_seconds: float,
                    heartbeat_seconds: float, pool_size: int, orphan_sweep_seconds: float,
                    orphan_grace_seconds: float, log_budget: int, max_children: int, no_migrate: bool,
                    snapshot_key_file: str | None, old_key_files: tuple[str, ...]) -> None:
    """Run a coordinator: the gRPC API and the agent channel, over Postgres.

    Agents encrypt every snapshot under a key this coordinator hands them when
    they register: --snapshot-key-file, or else a key generated once and kept
    in the database (docs/security.md, "Snapshot encryption").
    """
    from torpor._seal import read_key_file
    from torpor.coordinator import Coordinator, CoordinatorConfig, Limits, TLSConfig

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if heartbeat_seconds * 2 > lease_seconds:
        raise click.UsageError(f"--heartbeat {heartbeat_seconds:g} is too long for --lease {lease_seconds:g}: "
                               "an agent must be able to miss a heartbeat and keep its lease (heartbeat <= lease / 2)")
    try:
        snapshot_key = read_key_file(snapshot_key_file) if snapshot_key_file else None
        old_keys = tuple(read_key_file(p) for p in old_key_files)
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    store = None
    if store_url:
        from torpor.cli._s3 import s3_options_from_env
        from torpor.store import open_store

        store = open_store(store_url, s3=s3_options_from_env())
    config = CoordinatorConfig(
        db_url=db_url, listen=listen, auth=not no_auth, api_keys=_read_secrets(api_key_file),
        join_tokens=_read_secrets(join_token_file),
        tls=TLSConfig(cert_file=tls_cert, key_file=tls_key) if tls_cert and tls_key else None,
        lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds, db_pool_size=pool_size,
        orphan_sweep_seconds=orphan_sweep_seconds, orphan_grace_seconds=orphan_grace_seconds,
        migrate=not no_migrate, log_budget_bytes=log_budget, limits=Limits(max_children=max_children),
        snapshot_key=snapshot_key, old_snapshot_keys=old_keys,
    )
    coord = Coordinator(config, store=store)
    try:
        coord.start()
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"coordinator {coord.id} listening on {listen.rsplit(':', 1)[0]}:{coord.port}", err=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    coord.stop(grace=5.0)


@cli.command("migrate")
@_db_option
def migrate_cmd(db_url: str) -> None:
    """Apply pending schema migrations."""
    from torpor.coordinator import migrate

    try:
        before, after = migrate(db_url)
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"schema at version {after}" + (f" (was {before})" if before != after else " (up to date)"))


def _db_call(db_url: str, work, *args):  # type: ignore[no-untyped-def]
    """Run one unit of work in one transaction on one connection; a database that is down fails in seconds."""
    from psycopg.rows import dict_row

    from torpor.coordinator._db import connect_retrying

    with connect_retrying(db_url, attempts=3, connect_timeout=5, row_factory=dict_row) as conn:
        with conn.transaction(), conn.cursor() as cur:
            return work(cur, *args)


@cli.group("keys")
def keys_group() -> None:
    """Client API keys and agent join tokens (stored hashed)."""


@keys_group.command("create")
@_db_option
@click.option("--kind", type=click.Choice(["client", "agent"]), default="client", show_default=True,
              help="client: an API key for the API; agent: a join token for agents.")
@click.option("--name", default="", help="A note saying what the key is for.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create(db_url: str, kind: str, name: str, as_json: bool) -> None:
    """Create a key and print its secret, once: only its sha256 is stored."""
    from torpor.coordinator import create_key

    key_id, secret = _db_call(db_url, create_key, kind, name)
    if as_json:
        click.echo(json.dumps({"id": key_id, "kind": kind, "secret": secret}))
    else:
        click.echo(secret)
        click.echo(f"({kind} key {key_id}; store the secret now, it cannot be shown again)", err=True)


@keys_group.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(db_url: str, as_json: bool) -> None:
    """List keys (never their secrets)."""
    from torpor.coordinator import list_keys

    rows = _db_call(db_url, list_keys)
    out = [{"id": r["id"], "kind": r["kind"], "name": r["name"], "created_at": r["created_at"].isoformat(),
            "revoked": r["revoked_at"] is not None} for r in rows]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out:
        click.echo(f"{r['id']}  {r['kind']:<6}  {'revoked' if r['revoked'] else 'active ':<7}  {r['created_at'][:19]}  {r['name']}")


@keys_group.command("revoke")
@_db_option
@click.argument("key_id")
def keys_revoke(db_url: str, key_id: str) -> None:
    """Revoke a key by id; coordinators stop accepting it within seconds."""
    from torpor.coordinator import revoke_key

    if not _db_call(db_url, revoke_key, key_id):
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}")
