"""torpor dev: the whole stack on this machine."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from torpor.cli._group import cli


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".torpor"), show_default=True,
              help="Postgres cluster, store, secrets and agent state; reuse it to keep runs across restarts.")
@click.option("--port", type=click.IntRange(1, 65535), default=7433, show_default=True, help="Coordinator port on 127.0.0.1.")
@click.option("--agents", type=click.IntRange(1, 16), default=1, show_default=True, help="Agent processes to start.")
@click.option("--slots", type=click.IntRange(1, 64), default=4, show_default=True, help="Slots per agent.")
@click.option("--store", "store_url", help="Use this store (s3://bucket/prefix with TORPOR_S3_ENDPOINT) instead of DATA_DIR/store.")
@click.option("--suspend-threshold", type=float, default=5.0, show_default=True,
              help="Waits shorter than this many seconds are served in place.")
def dev(data_dir: Path, port: int, agents: int, slots: int, store_url: str | None, suspend_threshold: float) -> None:
    """Run Postgres, a coordinator and agents on this machine until Ctrl-C.

    Writes DATA_DIR/client.env (TORPOR_ADDRESS, TORPOR_API_KEY) for other
    shells: `set -a; . .torpor/client.env; set +a`, then `torpor deploy`,
    `torpor trigger`, `torpor runs show`. Ctrl-C stops everything it started,
    containers included.
    """
    from torpor._devstack import DevConfig, DevStack
    from torpor._errors import TorporError

    stack = DevStack(DevConfig(data_dir=data_dir, port=port, agents=agents, slots=slots, store_url=store_url,
                               suspend_threshold=suspend_threshold))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        stack.start()
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    d = stack.dir
    click.echo(f"torpor dev is running (data in {d})")
    click.echo(f"  postgres     127.0.0.1:{stack.pg_port}   log {d}/logs/postgres.log")
    click.echo(f"  coordinator  {stack.address}   log {d}/logs/coordinator.log")
    for name in stack.agent_names():
        click.echo(f"  agent        {name} ({slots} slots)   state {stack.agent_state_dir(name)}   log {d}/logs/{name}.log")
    click.echo(f"  store        {stack.store_url}")
    click.echo(f"In another shell:  set -a; . {d}/client.env; set +a")
    click.echo("Ctrl-C stops everything.")
    sys.stdout.flush()
    try:
        while not done.wait(0.5):
            dead = stack.failed()
            if dead:
                click.echo(f"stopping: {', '.join(dead)} exited; see {d}/logs/", err=True)
                break
            for name, ids in stack.reap_dead_agents():
                click.echo(f"{name} exited, as a host dies: killed its {len(ids)} container(s); the coordinator "
                           "restores their runs elsewhere from their latest checkpoints", err=True)
    finally:
        click.echo("stopping torpor dev ...", err=True)
        stack.stop()
        click.echo("stopped.", err=True)
