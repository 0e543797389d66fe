"""torpor agent: the per-host daemon."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import click

from torpor.cli._group import cli
from torpor.cli._sizes import BYTES
from torpor.sdk._task import NETWORK_MODES

log = logging.getLogger(__name__)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"{v!r}: labels are KEY=VALUE", param_hint="--label")
        k, _, val = v.partition("=")
        out[k] = val
    return out


@cli.command()
@click.option("--coordinator", envvar="TORPOR_COORDINATOR", default="127.0.0.1:7433", show_default=True,
              help="host:port of a coordinator. [env TORPOR_COORDINATOR]")
@click.option("--join-token", envvar="TORPOR_JOIN_TOKEN", help="Join token (torpor keys create --kind agent). [env TORPOR_JOIN_TOKEN]")
@click.option("--join-token-file", envvar="TORPOR_JOIN_TOKEN_FILE", type=click.Path(exists=True, dir_okay=False),
              help="Read the join token from this file instead. [env TORPOR_JOIN_TOKEN_FILE]")
@click.option("--name", envvar="TORPOR_AGENT_NAME", default=socket.gethostname(), show_default=True,
              help="Unique name of this agent. [env TORPOR_AGENT_NAME]")
@click.option("--slots", envvar="TORPOR_SLOTS", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Runs executed at once. [env TORPOR_SLOTS]")
@click.option("--state-dir", envvar="TORPOR_STATE_DIR", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/var/lib/torpor/agent"), show_default=True,
              help="Bundles, logs, runc state, CRIU scratch. [env TORPOR_STATE_DIR]")
@click.option("--store", envvar="TORPOR_STORE", required=True,
              help="Snapshot store: file:///dir or s3://bucket/prefix. [env TORPOR_STORE]")
@click.option("--label", "labels", multiple=True, envvar="TORPOR_LABELS",
              help="KEY=VALUE label, repeatable. [env TORPOR_LABELS, space-separated]")
@click.option("--suspend-threshold", envvar="TORPOR_SUSPEND_THRESHOLD", type=float, default=5.0, show_default=True,
              help="Seconds: shorter waits are served in place, longer ones suspend the run to a snapshot. "
                   "[env TORPOR_SUSPEND_THRESHOLD]")
@click.option("--criu", envvar="TORPOR_CRIU", help="criu binary (default: /opt/torpor/bin/criu, then PATH). [env TORPOR_CRIU]")
@click.option("--image-dir", envvar="TORPOR_IMAGE_DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Scratch for CRIU images; a tmpfs makes dumps faster. Default: STATE_DIR/images. [env TORPOR_IMAGE_DIR]")
@click.option("--dump-timeout", envvar="TORPOR_DUMP_TIMEOUT", type=click.FloatRange(min=1), default=600.0,
              show_default=True,
              help="Seconds a CRIU dump may take; past that CRIU is killed, the container thawed and the "
                   "checkpoint fails (a suspend then waits in place). [env TORPOR_DUMP_TIMEOUT]")
@click.option("--python", "python_bin", default="/usr/bin/python3", show_default=True,
              help="Interpreter inside containers (from the host's /usr).")
@click.option("--tls-ca", envvar="TORPOR_TLS_CA", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate of the coordinator (enables TLS). [env TORPOR_TLS_CA]")
@click.option("--max-metadata-bytes", envvar="TORPOR_MAX_METADATA_BYTES", type=BYTES, default="64KiB",
              show_default=True,
              help="Largest metadata of one run (its JSON); metadata.set over it raises LimitExceeded in the task "
                   "and the stored metadata is kept. [env TORPOR_MAX_METADATA_BYTES]")
@click.option("--max-result-bytes", envvar="TORPOR_MAX_RESULT_BYTES", type=BYTES, default="4MiB",
              show_default=True,
              help="Largest output of a task (its JSON); a bigger one fails the attempt with an error naming the "
                   "limit. [env TORPOR_MAX_RESULT_BYTES]")
@click.option("--max-trigger-bytes", envvar="TORPOR_MAX_TRIGGER_BYTES", type=BYTES, default="8MiB",
              show_default=True,
              help="Largest trigger request from a task (a batch's payloads together); a bigger one raises "
                   "LimitExceeded in the task. [env TORPOR_MAX_TRIGGER_BYTES]")
@click.option("--runtime-connections", envvar="TORPOR_RUNTIME_CONNECTIONS", type=click.IntRange(1, 4096),
              default=8, show_default=True,
              help="Runtime-socket connections served at once for one run (a thread each); more wait unaccepted. "
                   "[env TORPOR_RUNTIME_CONNECTIONS]")
@click.option("--runtime-connections-total", envvar="TORPOR_RUNTIME_CONNECTIONS_TOTAL", type=click.IntRange(1, 65536),
              default=128, show_default=True,
              help="Runtime-socket connections served at once for all runs of this agent. "
                   "[env TORPOR_RUNTIME_CONNECTIONS_TOTAL]")
@click.option("--runtime-read-timeout", envvar="TORPOR_RUNTIME_READ_TIMEOUT", type=click.FloatRange(min=0.1),
              default=30.0, show_default=True,
              help="Seconds a runtime connection has to send its whole request; a stalled one is dropped. "
                   "[env TORPOR_RUNTIME_READ_TIMEOUT]")
@click.option("--max-open-waits", envvar="TORPOR_MAX_OPEN_WAITS", type=click.IntRange(1, 100000),
              default=64, show_default=True,
              help="Waits and checkpoints one run may have open at once. [env TORPOR_MAX_OPEN_WAITS]")
@click.option("--outbox-log-bytes", envvar="TORPOR_OUTBOX_LOG_BYTES", type=BYTES, default="64MiB",
              show_default=True,
              help="Logs held in memory until the coordinator acknowledges them; past this, output is dropped "
                   "and a marker line counts it (reports are never dropped). [env TORPOR_OUTBOX_LOG_BYTES]")
@click.option("--stop-runs-on-exit", is_flag=True,
              help="Kill this agent's containers when it stops (torpor dev). Either way, an agent that starts "
                   "kills the containers a previous instance left behind: the coordinator restores those runs "
                   "from their latest checkpoint, so no run ever has two live copies.")
@click.option("--network", "network", envvar="TORPOR_NETWORK", type=click.Choice(NETWORK_MODES),
              default="egress", show_default=True,
              help="Network of a run whose task names none (@task(network=...)): egress = outbound connections "
                   "through NAT, nothing on this host nor other runs; none = its own loopback only; host = this "
                   "host's network, no isolation (needs --allow-host-network). [env TORPOR_NETWORK]")
@click.option("--run-network", envvar="TORPOR_RUN_NETWORK", default="10.213.0.0/16", show_default=True,
              help="IPv4 network each egress run gets a /30 of; the same on every agent of a host, and not used "
                   "anywhere else on it. [env TORPOR_RUN_NETWORK]")
@click.option("--allow-host-network", envvar="TORPOR_ALLOW_HOST_NETWORK", is_flag=True,
              help="Let tasks ask for network='host' (they then reach everything this host reaches, its "
                   "loopback services included). [env TORPOR_ALLOW_HOST_NETWORK]")
@click.option("--memory", "memory_bytes", envvar="TORPOR_MEMORY", type=BYTES, default=None,
              help="Memory this agent offers to runs (default: the host's total). The coordinator places a run "
                   "whose task sets memory= only where the memory limits of the runs already there leave room "
                   "for its own. [env TORPOR_MEMORY]")
@click.option("--env-ttl", envvar="TORPOR_ENV_TTL", type=click.FloatRange(min=0), default=86400.0,
              show_default=True,
              help="Seconds an unpacked environment (a deployment's third-party packages, STATE_DIR/envs) that no "
                   "run here uses is kept after its last use before it is removed; fetched again if needed. "
                   "[env TORPOR_ENV_TTL]")
def agent(coordinator: str, join_token: str | None, join_token_file: str | None, name: str, slots: int, state_dir: Path,
          store: str, labels: tuple[str, ...], suspend_threshold: float, criu: str | None, image_dir: Path | None,
          dump_timeout: float, python_bin: str, tls_ca: str | None, max_metadata_bytes: int, max_result_bytes: int,
          max_trigger_bytes: int, runtime_connections: int, runtime_connections_total: int,
          runtime_read_timeout: float, max_open_waits: int, outbox_log_bytes: int, stop_runs_on_exit: bool,
          network: str, run_network: str, allow_host_network: bool, memory_bytes: int | None,
          env_ttl: float) -> None:
    """Run the agent of this host: executes runs in containers, snapshots them with CRIU.

    Needs root, runc and CRIU >= 4.2 (run `torpor doctor` first). Containers
    run only while this agent holds its lease: when no renewal is confirmed in
    time (partition, hung agent, coordinator or database down) a guard process
    freezes them until one is. An agent that starts kills the containers an
    earlier instance left; the coordinator restores those runs from their
    latest checkpoint.

    A task cannot make the agent use unbounded memory, threads or storage: its
    requests on the runtime socket, its connections, its open waits and its
    logs are bounded by the options below (docs/security.md, "Bounds"). Sizes
    take bytes or KiB/MiB/GiB.
    """
    from torpor._errors import TorporError
    from torpor.agent import AgentConfig, Runc, find_criu
    from torpor.agent._bounds import AgentBounds
    from torpor.agent._daemon import Agent, DaemonConfig
    from torpor.cli._s3 import s3_options_from_env
    from torpor.store import open_store

    from torpor import _faults

    _faults.configure(os.environ.get("TORPOR_FAULTS", ""))  # tests only: named fault-injection points
    if join_token_file:
        join_token = Path(join_token_file).read_text().strip()
    if not join_token:
        raise click.UsageError("a join token is needed: --join-token, --join-token-file or TORPOR_JOIN_TOKEN")
    if os.geteuid() != 0:
        raise click.ClickException("the agent needs root (runc and CRIU); run `torpor doctor` to check this host")
    try:
        bounds = AgentBounds(max_metadata_bytes=max_metadata_bytes, max_result_bytes=max_result_bytes,
                             max_trigger_bytes=max_trigger_bytes, connections_per_run=runtime_connections,
                             connections_total=runtime_connections_total, read_timeout=runtime_read_timeout,
                             max_open_waits=max_open_waits, outbox_log_bytes=outbox_log_bytes)
        criu_info = find_criu(criu, tools_dir=Path(os.environ.get("TORPOR_TOOLS", "/opt/torpor")))
        st = open_store(store, s3=s3_options_from_env())
        st.check()
        daemon = Agent(
            DaemonConfig(name=name, coordinator=coordinator, join_token=join_token, slots=slots, labels=_labels(labels),
                         suspend_threshold=suspend_threshold, tls_ca=Path(tls_ca).read_bytes() if tls_ca else None,
                         bounds=bounds, memory_bytes=memory_bytes or 0, env_ttl=env_ttl),
            containers=AgentConfig(state_dir=state_dir, python=python_bin, image_dir=image_dir,
                                   dump_timeout=dump_timeout, network=network, run_network=run_network,
                                   allow_host_network=allow_host_network),
            runc=Runc(root=state_dir / "runc", criu=criu_info),
            store=st,
        )
    except TorporError as exc:
        raise click.ClickException(str(exc)) from exc

    def on_signal(signum, frame):  # type: ignore[no-untyped-def]
        log.info("signal %s: stopping the agent", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def notify_when_ready() -> None:
        if daemon.connected.wait(timeout=3600):
            sd_notify("READY=1\nSTATUS=connected to " + coordinator)

    threading.Thread(target=notify_when_ready, daemon=True).start()
    click.echo(f"agent {name}: {slots} slots, CRIU {criu_info.version}, store {st.url}, coordinator {coordinator}",
               err=True)
    daemon.serve_forever()
    sd_notify("STOPPING=1")
    if stop_runs_on_exit:
        daemon.shutdown_containers(wait=30)
    sys.exit(0)
