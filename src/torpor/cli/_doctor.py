"""torpor doctor."""

from __future__ import annotations

import json
import sys

import click

from torpor.cli._group import cli


@cli.command()
@click.option("--db", envvar="TORPOR_DB", help="Also check this Postgres URL is reachable. [env TORPOR_DB]")
@click.option("--store", envvar="TORPOR_STORE", help="Also check this store (file:///dir or s3://bucket/prefix). [env TORPOR_STORE]")
@click.option("--criu", envvar="TORPOR_CRIU", help="Check this criu binary instead of the one torpor would pick. [env TORPOR_CRIU]")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def doctor(db: str | None, store: str | None, criu: str | None, as_json: bool) -> None:
    """Check that this host can run torpor: root, kernel, CRIU, runc, cgroups, iptables.

    Prints one line per check; a failed check says how to fix it. Exits 1 if
    any required check fails (optional ones, such as overlayfs, only warn).
    """
    from torpor._doctor import run_checks
    from torpor.cli._s3 import s3_options_from_env

    import os
    from pathlib import Path

    checks = run_checks(criu=criu, db=db, store=store, s3=s3_options_from_env() if store else None,
                        tools_dir=Path(os.environ.get("TORPOR_TOOLS", "/opt/torpor")))
    failed = [c for c in checks if c.required and not c.ok]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        color = sys.stdout.isatty()
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            if color:
                mark = click.style(mark, fg="green" if c.ok else ("red" if c.required else "yellow"))
            click.echo(f"{mark}  {c.name:<16} {c.detail}")
            for note in c.notes:
                click.echo(f"      {'':<16} note: {note}")
            if not c.ok and c.fix:
                click.echo(f"      {'':<16} fix: {c.fix}")
        click.echo("torpor can run on this host." if not failed else f"{len(failed)} required check(s) failed.")
    sys.exit(1 if failed else 0)
