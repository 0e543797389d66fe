"""torpor snapshots: look at the checkpoints a store holds, fetch and verify one."""

from __future__ import annotations

import json
from pathlib import Path

import click

from torpor.cli._group import cli

_store_option = click.option("--store", envvar="TORPOR_STORE", required=True,
                             help="The store the agents use (file:///dir or s3://bucket/prefix). [env TORPOR_STORE]")


def _manifests(store, run_id: str):  # type: ignore[no-untyped-def]
    from torpor.agent._snapshot import read_manifest

    keys = [k for k in store.list(f"runs/{run_id}/checkpoints/") if k.endswith("/manifest.json")]
    return sorted((read_manifest(store, k) for k in keys), key=lambda m: m.created_at)


@cli.group()
def snapshots() -> None:
    """Checkpoints in the store (operators: inspect, fetch and verify)."""


@snapshots.command("list")
@click.argument("run_id")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(run_id: str, store: str, as_json: bool) -> None:
    """List RUN_ID's complete checkpoints (those whose manifest was written)."""
    from torpor.cli._s3 import s3_options_from_env
    from torpor.store import open_store

    st = open_store(store, s3=s3_options_from_env())
    items = [{"id": m.checkpoint_id, "kind": m.kind, "created_at": m.created_at, "stored_bytes": m.archive_size,
              "raw_bytes": m.raw_bytes, "criu": m.criu_version, "version": m.deployment_version, "manifest": m.key}
             for m in _manifests(st, run_id)]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo(f"no complete checkpoint of {run_id} in {st.url}")
    for i in items:
        click.echo(f"{i['id']}  {i['kind']:<9} {i['created_at']}  {i['stored_bytes'] / 1e6:,.1f} MB stored "
                   f"({i['raw_bytes'] / 1e6:,.1f} MB image)  CRIU {i['criu']}")


@snapshots.command("fetch")
@click.argument("run_id")
@click.argument("dest", type=click.Path(path_type=Path))
@_store_option
@click.option("--checkpoint", "checkpoint_id", help="Which checkpoint (default: the latest).")
def fetch_cmd(run_id: str, dest: Path, store: str, checkpoint_id: str | None) -> None:
    """Download, verify and unpack a checkpoint of RUN_ID into DEST (a new directory).

    The result is CRIU's image directory, e.g. for `crit show DEST/core-1.img`.
    A snapshot that does not match its manifest is refused and nothing is kept.
    """
    from torpor._errors import TorporError
    from torpor.agent._snapshot import download_image
    from torpor.cli._progress import Progress
    from torpor.cli._s3 import s3_options_from_env
    from torpor.store import open_store

    st = open_store(store, s3=s3_options_from_env())
    try:
        found = _manifests(st, run_id)
        if checkpoint_id:
            found = [m for m in found if m.checkpoint_id == checkpoint_id]
        if not found:
            raise click.ClickException(f"no complete checkpoint {checkpoint_id or ''} of run {run_id} in {st.url}")
        m = found[-1]
        progress = Progress(f"fetching {m.checkpoint_id[:12]}", m.archive_size)
        download_image(st, m, dest, progress=progress)
        progress.finish()
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{dest}: {len(m.files)} files, {m.raw_bytes / 1e6:,.1f} MB, verified against {m.key}")
