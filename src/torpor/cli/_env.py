"""torpor env: a project's environment variables and secrets, given to its runs at each start."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from torpor.cli._api import _connection
from torpor.cli._group import cli


def _project(project: str | None) -> str:
    if project:
        return project
    from torpor._errors import ConfigError
    from torpor.sdk._project import load_project

    try:
        return load_project(Path.cwd()).name
    except ConfigError as exc:
        raise click.UsageError(f"which project? give --project NAME, or run this in the directory of its "
                               f"torpor.toml ({exc})") from None


def _print(resp: Any, as_json: bool) -> None:
    rows = [{"name": v.name, "secret": v.secret, "value": None if v.secret else v.value,
             "updated_at": v.updated_at.ToDatetime().isoformat() + "Z" if v.HasField("updated_at") else None}
            for v in resp.vars]
    if as_json:
        click.echo(json.dumps({"project": resp.project, "vars": rows}, indent=2))
        return
    if not rows:
        click.echo(f"project {resp.project} has no variables (torpor env set NAME=VALUE [--secret])")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        shown = "(secret)" if r["secret"] else r["value"]
        click.echo(f"{r['name']:<{width}}  {shown}  {click.style('set ' + (r['updated_at'] or '')[:19], dim=True)}")


_PROJECT_OPTION = click.option("--project", default=None,
                               help="The project (default: the one of ./torpor.toml).")


@cli.group("env")
def env_group() -> None:
    """A project's environment variables and secrets, given to its runs.

    Each run gets them as environment variables when it starts (and again at
    each new attempt, with the values then current). A run restored from a
    snapshot keeps the environment it had: it is part of the process.
    """


@env_group.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--secret", is_flag=True,
              help="Secrets are sealed in Postgres (AES-256-GCM, under a key derived from the snapshot key) and "
                   "never shown again: not by env list, logs or runs show.")
@_PROJECT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the variables after the change as JSON.")
@_connection
def env_set(client: Any, assignments: tuple[str, ...], secret: bool, project: str | None, as_json: bool) -> None:
    """Set NAME=VALUE for the project's new runs and attempts (all given, or none).

    A new value applies from the next start or attempt; a run restored from a
    snapshot keeps what it had in memory: its environment is part of the
    process, so inside its snapshot (which is encrypted). Names: letters,
    digits and '_', not starting with a digit or TORPOR_, and not PYTHONPATH
    or PYTHONHOME; a value up to 32 KiB, all of a project's up to 256 KiB.
    A value of '-' reads it from standard input (so a secret stays out of
    your shell history: torpor env set API_KEY=- --secret).
    """
    values: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: give NAME=VALUE", param_hint="NAME=VALUE")
        if name in values:
            raise click.BadParameter(f"{name} is given twice; give each name once", param_hint="NAME=VALUE")
        values[name] = value
    from_stdin = [name for name, value in values.items() if value == "-"]
    if len(from_stdin) > 1:
        raise click.BadParameter(f"{' and '.join(from_stdin)} both read standard input; set one at a time",
                                 param_hint="NAME=VALUE")
    for name in from_stdin:
        values[name] = sys.stdin.read().rstrip("\n")
    _print(client.set_env(_project(project), values, secret=secret), as_json)


@env_group.command("list")
@_PROJECT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON (secrets have value null).")
@_connection
def env_list(client: Any, project: str | None, as_json: bool) -> None:
    """The project's variables; secrets show as (secret), never their value."""
    _print(client.list_env(_project(project)), as_json)


@env_group.command("unset")
@click.argument("names", nargs=-1, required=True)
@_PROJECT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the variables after the change as JSON.")
@_connection
def env_unset(client: Any, names: tuple[str, ...], project: str | None, as_json: bool) -> None:
    """Remove variables (all given, or none if one is not set) for the project's next starts."""
    _print(client.unset_env(_project(project), list(names)), as_json)
