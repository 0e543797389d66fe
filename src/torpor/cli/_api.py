"""Client verbs over the coordinator's API: trigger, runs, tokens, agents.

Address and key come from --address/--api-key or TORPOR_ADDRESS/TORPOR_API_KEY.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from torpor._errors import ErrorCode, RPCError
from torpor.cli._group import cli


def _connection(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --address/--api-key/--tls/--ca-file; pass a connected ``client``.

    Errors are left to the root group, which prints them as one line with a hint.
    """

    @click.option("--address", envvar="TORPOR_ADDRESS", default="127.0.0.1:7433", show_default=True,
                  help="Coordinator host:port (env TORPOR_ADDRESS).")
    @click.option("--api-key", envvar="TORPOR_API_KEY", default=None, help="Client API key (env TORPOR_API_KEY).")
    @click.option("--tls", is_flag=True, envvar="TORPOR_TLS", help="Connect with TLS (env TORPOR_TLS).")
    @click.option("--ca-file", envvar="TORPOR_CA_FILE", default=None, type=click.Path(dir_okay=False),
                  help="PEM CA to verify the coordinator with; implies --tls (env TORPOR_CA_FILE).")
    @functools.wraps(fn)
    def wrapper(address: str, api_key: str | None, tls: bool, ca_file: str | None, **kwargs: Any) -> Any:
        from torpor.client import Client, ClientTLS

        tls_setting: bool | ClientTLS = ClientTLS(ca_file=ca_file) if ca_file else tls
        with Client(address, api_key=api_key, tls=tls_setting) as client:
            return fn(client=client, **kwargs)

    return wrapper


def _json_arg(value: str | None, what: str) -> str | None:
    """JSON text given inline, or ``@path`` to read it from a file (``@-`` for stdin)."""
    if value is None:
        return None
    if value.startswith("@"):
        path = value[1:]
        try:
            value = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=what) from None
    return value


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _short(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _show_run(run: Any) -> None:
    from torpor.client import run_dict

    d = run_dict(run)
    click.echo(f"{d['id']}  {d['task']}  {click.style(d['status'], bold=True)}  attempt {d['attempt']}  version {d['version']}")
    rows = [("created", d["created_at"]), ("started", d["started_at"]), ("finished", d["finished_at"]),
            ("agent", d["agent"]), ("queue", d["queue"] + (f" / {d['concurrency_key']}" if d["concurrency_key"] else "")),
            ("tags", ", ".join(d["tags"]) or None), ("parent", d["parent_run_id"]),
            ("payload", _short(run.payload_json)), ("output", _short(run.output_json) if run.output_json else None),
            ("error", d["error"])]
    for label, value in rows:
        if value:
            click.echo(f"  {label:<9}{value}")
    if d["waiting"]:
        click.echo(f"  waiting  {_describe_wait(d['id'], d['waiting'])}")
    if d["unplaced"]:
        click.echo(f"  unplaced {d['unplaced']}")
    for a in d["attempts"]:
        if a["log_dropped_bytes"]:
            click.echo(f"  logs     attempt {a['number']}: {a['log_bytes']:,} bytes kept, {a['log_dropped_bytes']:,} "
                       "dropped (over the log budget or while the agent's outbox was full; marker lines say where)")
    if d["traceback"]:
        click.echo("  traceback:")
        for line in d["traceback"].rstrip().splitlines():
            click.echo(f"    {line}")
    click.echo("\nTimeline")
    for e in d["events"]:
        where = f" [{e['agent']}]" if e["agent"] else ""
        click.echo(f"  {(e['time'] or '')[11:23]}  {e['type']:<20}{where} {e['detail']}".rstrip())
    if d["checkpoints"]:
        click.echo("\nCheckpoints")
        for c in d["checkpoints"]:
            click.echo(f"  {c['id']:<24} {c['kind']:<10} {c['size_bytes']:>12,} B  {c['duration_ms']:>6} ms  {c['agent']}")


def _describe_wait(run_id: str, w: dict[str, Any]) -> str:
    """The run's current wait, and the command that ends it."""
    if w["kind"] == "token":
        until = f", times out {w['due_at'][:19]}Z" if w["due_at"] else ""
        return f"on token {w['token_id']}{until} (complete it: torpor tokens complete {w['token_id']} --data JSON)"
    if w["kind"] == "children":
        return f"on {len(w['child_run_ids'])} child run(s): {', '.join(w['child_run_ids'])}"
    return f"until {(w['due_at'] or '?')[:19]}Z (end it now: torpor runs wake {run_id})"


def _status_line(run: Any) -> str:
    """``RUN_ID  STATUS`` and what a person wants next to it: the output, the error or the wait."""
    from torpor.client import run_dict

    d = run_dict(run)
    line = f"{d['id']}  {d['status']}"
    if d["status"] == "COMPLETED":
        line += f"  {_short(run.output_json or 'null', 200)}"
    elif d["error"]:
        line += f"  {_short(d['error'], 200)}"
    elif d["waiting"]:
        line += f"  waiting {_describe_wait(d['id'], d['waiting'])}"
    elif d["unplaced"]:
        line += f"  unplaced: {_short(d['unplaced'], 200)}"
    return line


@cli.command("trigger")
@click.argument("task")
@click.option("--payload", default=None, help="JSON payload, or @file to read it from a file (@- for stdin).")
@click.option("--idempotency-key", default="", help="Return the existing run if this key was used for TASK recently.")
@click.option("--idempotency-key-ttl", type=float, default=0.0, help="Seconds the key keeps matching (default 30 days).")
@click.option("--queue", default="", help="Queue to run in (default: the task's).")
@click.option("--concurrency-key", default="", help="Sub-queue: the queue's limit applies per key.")
@click.option("--tag", "tags", multiple=True, help="Tag the run (repeatable, at most 10).")
@click.option("--delay", type=float, default=0.0, help="Seconds before the run may start.")
@click.option("--version", default="", help="Deployed version (default: the latest that defines TASK).")
@click.option("--wait", is_flag=True, help="Wait until the run finishes; exit 1 unless it COMPLETED.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def trigger_cmd(client: Any, task: str, payload: str | None, idempotency_key: str, idempotency_key_ttl: float,
                queue: str, concurrency_key: str, tags: tuple[str, ...], delay: float, version: str, wait: bool,
                as_json: bool) -> None:
    """Start a run of TASK."""
    from torpor.client import run_dict

    resp = client.trigger(task, payload_json=_json_arg(payload, "--payload") or "null", idempotency_key=idempotency_key,
                          idempotency_key_ttl=idempotency_key_ttl, queue=queue, concurrency_key=concurrency_key,
                          tags=tags, delay=delay, version=version)
    run = client.wait_for_run(resp.run_id) if wait else resp.run
    if as_json:
        _dump({**run_dict(run), "existing": resp.existing})
    elif wait:
        _show_run(run)
    else:
        click.echo(resp.run_id)
        if resp.existing:
            click.echo("(an existing run with this idempotency key)", err=True)
    if wait and run_dict(run)["status"] != "COMPLETED":
        sys.exit(1)


@cli.group("runs")
def runs_group() -> None:
    """Inspect and control runs."""


@runs_group.command("list")
@click.option("--status", "statuses", multiple=True, help="Only runs in this status (repeatable).")
@click.option("--task", default="", help="Only runs of this task.")
@click.option("--tag", default="", help="Only runs with this tag.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Runs per page.")
@click.option("--page-token", default="", help="Continue after a previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def runs_list(client: Any, statuses: tuple[str, ...], task: str, tag: str, limit: int, page_token: str, as_json: bool) -> None:
    """List runs, newest first."""
    from torpor.client import run_dict

    try:
        resp = client.list_runs(status=statuses, task=task, tag=tag, page_size=limit, page_token=page_token)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    runs = [run_dict(r) for r in resp.runs]
    if as_json:
        _dump({"runs": runs, "next_page_token": resp.next_page_token or None})
        return
    for r in runs:
        click.echo(f"{r['id']}  {r['status']:<10} {r['task']:<24} attempt {r['attempt']}  {(r['created_at'] or '')[:19]}  "
                   f"{','.join(r['tags'])}".rstrip())
    if resp.next_page_token:
        click.echo(f"(more: --page-token {resp.next_page_token})", err=True)


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def runs_show(client: Any, run_id: str, as_json: bool) -> None:
    """A run: its state, payload, output, and a timeline of what happened."""
    from torpor.client import run_dict

    run = client.get_run(run_id)
    if as_json:
        _dump(run_dict(run))
    else:
        _show_run(run)


@runs_group.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run finishes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per chunk.")
@_connection
def runs_logs(client: Any, run_id: str, follow: bool, as_json: bool) -> None:
    """A run's stdout and stderr."""
    for chunk in client.stream_logs(run_id, follow=follow):
        if as_json:
            click.echo(json.dumps({"stream": chunk.stream, "attempt": chunk.attempt,
                                   "time": chunk.time.ToDatetime().isoformat() + "Z",
                                   "data": chunk.data.decode("utf-8", "replace")}))
        else:
            out = sys.stderr if chunk.stream == "stderr" else sys.stdout
            out.write(chunk.data.decode("utf-8", "replace"))
            out.flush()


def _run_action(name: str, doc: str, call: Callable[[Any, str], Any]) -> None:
    @runs_group.command(name, help=doc)
    @click.argument("run_id")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @_connection
    def command(client: Any, run_id: str, as_json: bool) -> None:
        from torpor.client import run_dict

        run = call(client, run_id)
        if as_json:
            _dump(run_dict(run))
        else:
            click.echo(_status_line(run))


_run_action("cancel", "Cancel a run: kill its container, release its snapshot, cancel its children.",
            lambda c, run_id: c.cancel_run(run_id))
_run_action("replay", "Start a new run of the same task with the same payload, on the latest version.",
            lambda c, run_id: c.replay_run(run_id).run)
_run_action("wake", "End RUN_ID's current time wait (wait.for_ / wait.until) now, as if its time had come.\n\n"
            "A suspended run is restored and goes on; a run still being suspended is woken where it is. "
            "A run waiting on a token is refused (complete the token: torpor tokens complete), and so is one "
            "waiting on child runs.",
            lambda c, run_id: c.wake_run(run_id))


@runs_group.command("wait")
@click.argument("run_id")
@click.option("--for", "until", type=click.Choice(["finished", "waiting", "suspended"]), default="finished",
              show_default=True,
              help="finished: until the run ends (exit 1 unless COMPLETED). waiting: until it waits on a time, a "
                   "token or children. suspended: until it waits as a snapshot, its container gone (both exit 1 "
                   "if the run ends first).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Give up after this many seconds (exit 2). Default: wait as long as it takes.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@_connection
def runs_wait(client: Any, run_id: str, until: str, timeout: float | None, as_json: bool) -> None:
    """Block until RUN_ID finishes, or until it waits; print its status line.

    \b
    Scripts use it to follow a run step by step, e.g.:
      RUN=$(torpor trigger my-task)
      torpor runs wait $RUN --for suspended && torpor runs wake $RUN
    """
    from torpor.client import run_dict
    from torpor.client._client import TERMINAL

    run = None
    try:
        for run in client.watch_run(run_id, timeout=timeout):
            if run.status in TERMINAL or _reached(run, until):
                break
    except RPCError as exc:
        if exc.code != ErrorCode.DEADLINE_EXCEEDED:
            raise
        click.echo(f"Error: run {run_id} was not {until} "
                   f"within {timeout:g} s" + (f" (it is {run_dict(run)['status']})" if run else ""), err=True)
        sys.exit(2)
    if run is None:
        raise RPCError(f"the coordinator sent nothing about run {run_id}", code=ErrorCode.UNAVAILABLE)
    if as_json:
        _dump(run_dict(run))
    else:
        click.echo(_status_line(run))
    ok = _reached(run, until) if until != "finished" else run_dict(run)["status"] == "COMPLETED"
    sys.exit(0 if ok else 1)


def _reached(run: Any, until: str) -> bool:
    from torpor._proto.v1 import common_pb2

    if until == "waiting":
        return run.HasField("waiting")
    # A SUSPENDED run whose wait already resolved is about to be restored: not what the caller waits for.
    return until == "suspended" and run.status == common_pb2.SUSPENDED and run.HasField("waiting")


@runs_group.command("checkpoint")
@click.argument("run_id")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Return once the checkpoint is durable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def runs_checkpoint(client: Any, run_id: str, wait: bool, as_json: bool) -> None:
    """Checkpoint a running run now; it keeps running."""
    from torpor.client import checkpoint_dict

    ckpt = client.checkpoint_run(run_id, wait=wait)
    if as_json:
        _dump(checkpoint_dict(ckpt) if ckpt is not None else {"requested": True})
    elif ckpt is not None:
        click.echo(f"{ckpt.id}  {ckpt.size_bytes:,} B  {ckpt.duration_ms} ms  {ckpt.agent}")
    else:
        click.echo("checkpoint requested")


@cli.group("tokens")
def tokens_group() -> None:
    """Tokens that runs wait on."""


@tokens_group.command("complete")
@click.argument("token", required=False)
@click.option("--run", "run_id", default=None, help="Complete the token this run is waiting on now, instead of TOKEN.")
@click.option("--data", default=None, help="JSON given to the waiting run, or @file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def tokens_complete(client: Any, token: str | None, run_id: str | None, data: str | None, as_json: bool) -> None:
    """Complete TOKEN (or the token --run RUN waits on); the run waiting on it resumes with DATA."""
    if (token is None) == (run_id is None):
        raise click.UsageError("give either TOKEN or --run RUN_ID (the run whose token to complete)")
    if run_id is not None:
        run = client.get_run(run_id)
        if not run.HasField("waiting") or run.waiting.kind != "token":
            from torpor.client import run_dict

            d = run_dict(run)
            what = f"waits {_describe_wait(run_id, d['waiting'])}" if d["waiting"] else "is not waiting"
            raise click.ClickException(f"run {run_id} is {d['status']} and {what}, not on a token")
        token = run.waiting.token_id
    resp = client.complete_token(token, data_json=_json_arg(data, "--data") or "null")
    if as_json:
        _dump({"token": token, "completed": resp.completed, "run_id": resp.run_id})
    else:
        click.echo(f"{token} {'completed' if resp.completed else 'was already completed'} (run {resp.run_id})")


@cli.group("agents")
def agents_group() -> None:
    """Hosts that run tasks."""


@agents_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def agents_list(client: Any, as_json: bool) -> None:
    """Agents known to the coordinators, with their slots and lease."""
    from torpor.client import agent_dict

    agents = [agent_dict(a) for a in client.list_agents()]
    if as_json:
        _dump(agents)
        return
    for a in agents:
        click.echo(f"{a['name']:<20} {'alive' if a['alive'] else 'LOST ':<6} {a['slots_used']}/{a['slots']} slots  "
                   f"{a['hostname']}  criu {a['criu_version'] or '?'}  python {a['python_version'] or '?'}  "
                   f"network {a['network'] or '?'}"
                   + (" (host allowed)" if a["allow_host_network"] else ""))
