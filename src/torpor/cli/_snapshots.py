"""torpor snapshots: look at the checkpoints a store holds, fetch, verify and decrypt one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from torpor.cli._group import cli

_store_option = click.option("--store", envvar="TORPOR_STORE", required=True,
                             help="The store the agents use (file:///dir or s3://bucket/prefix). [env TORPOR_STORE]")


def _manifests(store, run_id: str):  # type: ignore[no-untyped-def]
    from torpor.agent._manifest import read_manifest

    keys = [k for k in store.list(f"runs/{run_id}/checkpoints/") if k.endswith("/manifest.json")]
    return sorted((read_manifest(store, k) for k in keys), key=lambda m: m.created_at)


def _open_store(url: str):  # type: ignore[no-untyped-def]
    from torpor.cli._s3 import s3_options_from_env
    from torpor.store import open_store

    return open_store(url, s3=s3_options_from_env())


@cli.group()
def snapshots() -> None:
    """Checkpoints in the store (operators: inspect, fetch, verify and decrypt)."""


@snapshots.command("list")
@click.argument("run_id")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(run_id: str, store: str, as_json: bool) -> None:
    """List RUN_ID's complete checkpoints (those whose manifest was written), with the key each is encrypted with."""
    st = _open_store(store)
    items = [{"id": m.checkpoint_id, "kind": m.kind, "created_at": m.created_at, "stored_bytes": m.archive_size,
              "raw_bytes": m.raw_bytes, "criu": m.criu_version, "version": m.deployment_version, "manifest": m.key,
              "key_id": m.encryption.kek_id if m.encryption else None}
             for m in _manifests(st, run_id)]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo(f"no complete checkpoint of {run_id} in {st.url}")
    for i in items:
        click.echo(f"{i['id']}  {i['kind']:<9} {i['created_at']}  {i['stored_bytes'] / 1e6:,.1f} MB stored "
                   f"({i['raw_bytes'] / 1e6:,.1f} MB image)  CRIU {i['criu']}  "
                   f"{'key ' + i['key_id'] if i['key_id'] else 'not encrypted'}")


def _keyring(key_files: tuple[Path, ...], db_url: str | None):  # type: ignore[no-untyped-def]
    """The keys an operator passed: key files, and the key the coordinators keep in Postgres."""
    from torpor._seal import Keyring, read_key_file

    keks = [read_key_file(p) for p in key_files]
    if db_url:
        import psycopg

        from torpor.cli._server import _db_call
        from torpor.coordinator._snapshot_keys import stored_key

        try:
            stored = _db_call(db_url, stored_key)
        except psycopg.Error as exc:
            raise click.ClickException(f"cannot read the snapshot key from the database: {exc}".strip()
                                       + " (is its schema up to date? torpor migrate --db URL)") from None
        if stored is not None:
            keks.append(stored)
    return Keyring(keks[0], tuple(keks[1:])) if keks else None


@snapshots.command("fetch")
@click.argument("run_id")
@click.argument("dest", type=click.Path(path_type=Path))
@_store_option
@click.option("--checkpoint", "checkpoint_id", help="Which checkpoint (default: the latest).")
@click.option("--key-file", "key_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Repeatable: a snapshot key file (a coordinator's --snapshot-key-file or an older one), to "
                   "decrypt with. Mode 0600 or 0400.")
@click.option("--db", "db_url", envvar="TORPOR_DB",
              help="The torpor database: decrypt with the key the coordinators keep there when they have no "
                   "--snapshot-key-file (env TORPOR_DB).")
def fetch_cmd(run_id: str, dest: Path, store: str, checkpoint_id: str | None, key_files: tuple[Path, ...],
              db_url: str | None) -> None:
    """Download, verify, decrypt and unpack a checkpoint of RUN_ID into DEST (a new directory).

    The result is CRIU's image directory, e.g. for `crit show DEST/core-1.img`.
    Snapshots are encrypted: pass the key the checkpoint names (see `list`)
    with --key-file, or --db for the key kept in Postgres. A snapshot that
    does not match its manifest, or fails authentication, is refused and
    nothing is kept.
    """
    from torpor._errors import TorporError
    from torpor.agent._unpack import download_image
    from torpor.cli._progress import Progress

    st = _open_store(store)
    try:
        found = _manifests(st, run_id)
        if checkpoint_id:
            found = [m for m in found if m.checkpoint_id == checkpoint_id]
        if not found:
            raise click.ClickException(f"no complete checkpoint {checkpoint_id or ''} of run {run_id} in {st.url}")
        m = found[-1]
        keys = None
        if m.encryption is not None:
            keys = _keyring(key_files, db_url)
            if keys is None or keys.find(m.encryption.kek_id) is None:
                given = f" (given: {', '.join(keys.ids)})" if keys is not None else ""
                raise click.ClickException(
                    f"checkpoint {m.checkpoint_id} of run {run_id} is encrypted with snapshot key "
                    f"{m.encryption.kek_id}{given}: pass --key-file with that key (the coordinators' "
                    "--snapshot-key-file, or an older one), or --db URL of the torpor database if they keep "
                    "their key there")
        progress = Progress(f"fetching {m.checkpoint_id[:12]}", m.archive_size)
        download_image(st, m, dest, keys=keys, progress=progress)
        progress.finish()
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    sealed = f", decrypted with {m.encryption.kek_id}" if m.encryption else " (not encrypted)"
    click.echo(f"{dest}: {len(m.files)} files, {m.raw_bytes / 1e6:,.1f} MB, verified against {m.key}{sealed}")


@snapshots.command("keys")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_cmd(store: str, as_json: bool) -> None:
    """Count the store's checkpoints by the key they are encrypted with.

    A key no longer listed opens nothing in the store: after a rotation,
    drop its --snapshot-old-key-file once it is gone from here. Reads every
    manifest of the store.
    """
    from torpor._errors import NotFoundError, TorporError
    from torpor.agent._manifest import read_manifest

    st = _open_store(store)
    counts: Counter[str] = Counter()
    try:
        for key in st.list("runs/"):
            if key.endswith("/manifest.json") and "/checkpoints/" in key:
                try:
                    m = read_manifest(st, key)
                except NotFoundError:
                    continue  # deleted since the listing
                counts[m.encryption.kek_id if m.encryption else "none"] += 1
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(dict(sorted(counts.items())), indent=2))
        return
    if not counts:
        click.echo(f"no checkpoint in {st.url}")
    for kid, n in sorted(counts.items()):
        click.echo(f"{kid:<22} {n} checkpoint{'s' if n != 1 else ''}" + (" (not encrypted)" if kid == "none" else ""))
