"""torpor deploy: package a project, find its tasks, register the version."""

from __future__ import annotations

import json
from pathlib import Path

import click

from torpor.cli._api import _connection
from torpor.cli._group import cli


def _settings(task: dict):  # type: ignore[no-untyped-def]
    from torpor._proto.v1 import common_pb2 as cm

    retry = task["retry"]
    return cm.TaskSettings(
        id=task["id"], module=task["module"], function=task["function"],
        retry=cm.RetryPolicy(max_attempts=retry["max_attempts"], factor=retry["factor"], min_timeout=retry["min_timeout"],
                             max_timeout=retry["max_timeout"], randomize=retry["randomize"]),
        max_duration=task["max_duration"], queue=task["queue"], concurrency_limit=task["concurrency_limit"],
        checkpoint_every=task["checkpoint_every"], memory_bytes=task["memory_bytes"], cpus=task["cpus"],
    )


@cli.command()
@click.argument("project_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_connection
def deploy(client, project_dir: Path, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Package PROJECT_DIR (holding torpor.toml), register its tasks, print the version.

    Tasks are found by importing the modules listed in torpor.toml in a
    separate process. The version is the content hash of the code: deploying
    unchanged code again is a no-op. New runs use the latest version; runs
    already started keep theirs through retries and restores. The bundle is
    uploaded through the coordinator, which keeps it in its store.
    """
    from torpor.agent._bundle import build, bundle_key
    from torpor.sdk._project import discover_tasks, load_project

    project = load_project(project_dir)
    tasks = discover_tasks(project)
    version, blob = build(project.root)
    resp = client.deploy(version, [_settings(t) for t in tasks], project=project.name,
                         bundle_location=bundle_key(version), bundle=blob)
    out = {"project": project.name, "version": resp.version, "created": resp.created,
           "bundle_bytes": len(blob), "tasks": [t["id"] for t in tasks]}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        state = "deployed" if resp.created else "already deployed"
        click.echo(f"{project.name} {resp.version} {state}: {len(tasks)} task(s): {', '.join(out['tasks'])}")
