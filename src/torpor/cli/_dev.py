"""torpor dev: the whole stack on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from torpor.cli._group import cli


def _sizes(text: str | None) -> tuple[int, ...]:
    from torpor._sizes import parse_size

    try:
        return tuple(parse_size(part) for part in text.split(",")) if text else ()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent-memory") from None


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".torpor"), show_default=True,
              help="Postgres cluster, store, secrets and agent state; reuse it to keep runs across restarts.")
@click.option("--port", type=click.IntRange(1, 65535), default=7433, show_default=True, help="Coordinator port on 127.0.0.1.")
@click.option("--agents", type=click.IntRange(1, 16), default=1, show_default=True, help="Agent processes to start.")
@click.option("--slots", type=click.IntRange(1, 64), default=4, show_default=True, help="Slots per agent.")
@click.option("--store", "store_url", help="Use this store (s3://bucket/prefix with TORPOR_S3_ENDPOINT) instead of DATA_DIR/store.")
@click.option("--suspend-threshold", type=float, default=5.0, show_default=True,
              help="Waits shorter than this many seconds are served in place.")
@click.option("--detach", "-d", is_flag=True,
              help="Start in the background and return once the stack is ready (its output goes to DATA_DIR/logs/dev.log).")
@click.option("--stop", is_flag=True, help="Stop the torpor dev running on DATA_DIR (started with --detach or not).")
@click.option("--agent-memory", default=None, metavar="SIZE[,SIZE...]",
              help="Memory each agent offers to runs (agent --memory), in agent order, e.g. 2GiB,8GiB; the last "
                   "size applies to the agents after it. Default: the host's total for each.")
def dev(data_dir: Path, port: int, agents: int, slots: int, store_url: str | None, suspend_threshold: float,
        detach: bool, stop: bool, agent_memory: str | None) -> None:
    """Run Postgres, a coordinator and agents on this machine until Ctrl-C (or --stop).

    Writes DATA_DIR/client.env (TORPOR_ADDRESS, TORPOR_API_KEY) for other
    shells: `set -a; . .torpor/client.env; set +a`, then `torpor deploy`,
    `torpor trigger`, `torpor runs show`. Stopping stops everything it
    started, containers included; DATA_DIR keeps the runs for next time.

    Postgres listens on 127.0.0.1 and asks every connection for the password
    in DATA_DIR/secrets/postgres-password (user postgres); the secrets there
    and client.env are readable by root only. A DATA_DIR made by an older
    torpor dev (Postgres trusting local connections) is upgraded at start.

    \b
      torpor dev                 in the foreground; Ctrl-C stops it
      torpor dev --detach        in the background; returns once it is ready
      torpor dev --stop          stops the one running on DATA_DIR
    """
    from torpor._devstack import DevConfig, DevStack, stop_running

    memory = _sizes(agent_memory)  # a bad size fails here, before anything starts

    if stop:
        pid = stop_running(data_dir.resolve())
        click.echo(f"stopped torpor dev (pid {pid}) on {data_dir.resolve()}" if pid is not None
                   else f"no torpor dev is running on {data_dir.resolve()}")
        return
    if detach:
        _detach(data_dir.resolve(), ["--port", str(port), "--agents", str(agents), "--slots", str(slots),
                                     "--suspend-threshold", str(suspend_threshold),
                                     *(["--store", store_url] if store_url else []),
                                     *(["--agent-memory", agent_memory] if agent_memory else [])])
        return

    stack = DevStack(DevConfig(data_dir=data_dir, port=port, agents=agents, slots=slots, store_url=store_url,
                               suspend_threshold=suspend_threshold, agent_memory=memory))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    stack.start()
    d = stack.dir
    for note in stack.notes:
        click.echo(f"note: {note}")
    click.echo(f"torpor dev is running (data in {d})")
    click.echo(f"  postgres     127.0.0.1:{stack.pg_port}   user postgres, password in {d}/secrets/postgres-password"
               f"   log {d}/logs/postgres.log")
    click.echo(f"  coordinator  {stack.address}   log {d}/logs/coordinator.log")
    for name in stack.agent_names():
        click.echo(f"  agent        {name} ({slots} slots)   state {stack.agent_state_dir(name)}   log {d}/logs/{name}.log")
    click.echo(f"  store        {stack.store_url}")
    click.echo(f"In another shell:  set -a; . {_shown(d)}/client.env; set +a")
    click.echo(f"Stop it with Ctrl-C, or: torpor dev --stop{'' if _shown(d) == '.torpor' else f' --data-dir {d}'}")
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


def _shown(d: Path) -> str:
    """``d`` as a person in the current directory would type it."""
    return ".torpor" if d == Path(".torpor").resolve() else str(d)


def _detach(data_dir: Path, args: list[str], timeout: float = 180) -> None:
    """Run ``torpor dev`` in its own session, wait until it is ready (client.env written), show its summary."""
    from torpor._devstack import running_pid

    pid = running_pid(data_dir)
    if pid is not None:
        raise click.ClickException(f"torpor dev is already running on {data_dir} (pid {pid}); "
                                   "stop it with: torpor dev --stop")
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    # client.env appears when the stack is ready: an old one must not pass for it.
    (data_dir / "client.env").unlink(missing_ok=True)
    log_path = data_dir / "logs" / "dev.log"
    with open(log_path, "ab") as logf:
        start = logf.tell()
        proc = subprocess.Popen([sys.executable, "-m", "torpor.cli", "dev", "--data-dir", str(data_dir), *args],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while not (data_dir / "client.env").exists() or b"Ctrl-C" not in _read_from(log_path, start):
        if proc.poll() is not None:
            raise click.ClickException(f"torpor dev did not start (exit {proc.returncode}):\n"
                                       + _read_from(log_path, start).decode(errors="replace").strip()[-3000:])
        if time.monotonic() > deadline:
            proc.terminate()
            raise click.ClickException(f"torpor dev was not ready within {timeout:.0f}s; see {log_path}")
        time.sleep(0.2)
    click.echo(_read_from(log_path, start).decode(errors="replace").rstrip())
    click.echo(f"torpor dev runs in the background (pid {proc.pid}); its output goes to {log_path}")


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()
