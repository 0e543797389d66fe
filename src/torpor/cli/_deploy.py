"""torpor deploy: package a project, find its tasks, register the version."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from torpor.cli._api import _connection
from torpor.cli._group import cli

if TYPE_CHECKING:
    from torpor.agent._bundle import BundleFile


def _settings(task: dict):  # type: ignore[no-untyped-def]
    from torpor._proto.v1 import common_pb2 as cm

    retry = task["retry"]
    return cm.TaskSettings(
        id=task["id"], module=task["module"], function=task["function"],
        retry=cm.RetryPolicy(max_attempts=retry["max_attempts"], factor=retry["factor"], min_timeout=retry["min_timeout"],
                             max_timeout=retry["max_timeout"], randomize=retry["randomize"]),
        max_duration=task["max_duration"], queue=task["queue"], concurrency_limit=task["concurrency_limit"],
        checkpoint_every=task["checkpoint_every"], memory_bytes=task["memory_bytes"], cpus=task["cpus"],
        network=task.get("network", ""), payload_schema_json=task.get("payload_schema", ""),
    )


@cli.command()
@click.argument("project_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True,
              help="List the files the bundle would hold and their sizes; contact no coordinator, import no code.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_connection
def deploy(client, project_dir: Path, dry_run: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Package PROJECT_DIR (holding torpor.toml), register its tasks, print the version.

    Tasks are found by importing the modules listed in torpor.toml in a
    separate process. The version is the content hash of the code: deploying
    unchanged code again is a no-op. New runs use the latest version; runs
    already started keep theirs through retries and restores. The bundle is
    uploaded through the coordinator, which keeps it in its store.

    The bundle leaves out .torpor/, virtualenvs, .git/, caches, whatever a
    .gitignore or torpor.toml's exclude lists, and anything that is not a
    regular file; it is refused over torpor.toml's max_bundle_mb (50 MB).
    """
    from torpor.agent._bundle import bundle_key, check_size, pack, select_files
    from torpor.sdk._project import discover_tasks, load_project

    project = load_project(project_dir)
    # Select and size-check first: a project that cannot be packaged fails before its code is imported. The
    # client's channel connects on its first call, so a dry run, which makes none, needs no coordinator.
    files = select_files(project.root, exclude=project.exclude)
    total = check_size(project.root, files, project.max_bundle_bytes)
    if dry_run:
        _print_dry_run(project.name, files, total, project.max_bundle_bytes, as_json)
        return
    built = _environment(client, project, as_json) if project.requirements else None
    tasks = discover_tasks(project, packages=built.site if built else None)
    extra = {".torpor-environment": f"{built.id}\n{chr(10).join(built.requirements)}\n".encode()} if built else None
    version, blob = pack(project.root, files, extra)
    resp = client.deploy(version, [_settings(t) for t in tasks], project=project.name,
                         bundle_location=bundle_key(version), bundle=blob,
                         environment_id=built.id if built else "")
    out: dict = {"project": project.name, "version": resp.version, "created": resp.created,
                 "bundle_bytes": len(blob), "tasks": [t["id"] for t in tasks], "environment": None}
    if built:
        out["environment"] = {"id": built.id, "python": built.python, "requirements": built.requirements,
                              "uploaded": built.uploaded, "bytes": built.size_bytes}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        state = "deployed" if resp.created else "already deployed"
        click.echo(f"{project.name} {resp.version} {state}: {len(tasks)} task(s): {', '.join(out['tasks'])}")
        if built:
            how = (f"uploaded ({built.size_bytes / 1e6:,.1f} MB)" if built.uploaded
                   else "already in the store, nothing uploaded")
            n = len(built.requirements)
            click.echo(f"environment {built.id} (Python {built.python}, {n} package{'s' if n != 1 else ''}): {how}")


def _environment(client, project, quiet: bool):  # type: ignore[no-untyped-def]
    from torpor.cli import _environment as envs

    python = envs.target_python(project.python, client.list_agents())
    pinned = envs.resolve(list(project.requirements), python)
    built = envs.build(pinned, python)
    envs.upload(client, built)
    return built


@cli.group("deployments")
def deployments_group() -> None:
    """Deployed versions: their tasks and environment."""


@deployments_group.command("show")
@click.argument("version", required=False)
@click.option("--project", default=None, help="The newest deployment of this project (default: ./torpor.toml's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def deployments_show(client, version: str | None, project: str | None, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """A deployment (VERSION, or the newest of the project): its tasks and the exact packages its runs get."""
    if not version and not project:
        from torpor.cli._env import _project

        project = _project(None)
    d = client.get_deployment(version or "", project or "")
    env = d.environment if d.HasField("environment") else None
    out = {"version": d.version, "project": d.project, "created_at": d.created_at.ToDatetime().isoformat() + "Z",
           "tasks": list(d.tasks),
           "environment": {"id": env.id, "python": env.python, "platform": env.platform, "bytes": env.size_bytes,
                           "sha256": env.sha256, "requirements": list(env.requirements)} if env else None}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{d.project} {d.version}  deployed {out['created_at'][:19]}Z")
    click.echo(f"  tasks        {', '.join(d.tasks)}")
    if env is None:
        click.echo("  environment  none (the standard library and torpor)")
        return
    click.echo(f"  environment  {env.id}  Python {env.python}  {env.platform}  {env.size_bytes / 1e6:,.1f} MB")
    for r in env.requirements:
        click.echo(f"    {r}")


def _print_dry_run(project: str, files: Sequence[BundleFile], total: int, limit: int, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"project": project, "files": [{"path": f.path, "size": f.size} for f in files],
                               "total_bytes": total, "file_count": len(files)}, indent=2))
        return
    from torpor.sdk._project import MB

    width = max((len(f"{f.size:,}") for f in files), default=1)
    for f in files:
        click.echo(f"{f.size:>{width},}  {f.path}")
    click.echo(f"{len(files)} file(s), {total:,} bytes ({total / MB:.1f} MB of the {limit / MB:g} MB limit)")
