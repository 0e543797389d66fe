"""torpor install-service: systemd units for the agent and the coordinator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import click

from torpor.cli._group import cli

ENV_TEMPLATES = {
    "agent": """# torpor agent settings (read by torpor-agent.service)
TORPOR_COORDINATOR=coordinator.example:7433
TORPOR_STORE=s3://my-bucket/torpor
# TORPOR_S3_ENDPOINT=https://s3.example
# AWS_ACCESS_KEY_ID=...
# AWS_SECRET_ACCESS_KEY=...
# TORPOR_AGENT_NAME=this-host
""",
    "coordinator": """# torpor coordinator settings (read by torpor-coordinator.service)
TORPOR_DB=postgresql://torpor:secret@localhost:5432/torpor
TORPOR_STORE=s3://my-bucket/torpor
# TORPOR_LISTEN=0.0.0.0:7433
# TORPOR_TLS_CERT=/etc/torpor/tls.crt
# TORPOR_TLS_KEY=/etc/torpor/tls.key
""",
}


def render_unit(kind: str, torpor_bin: str) -> str:
    text = resources.files("torpor.systemd").joinpath(f"torpor-{kind}.service").read_text()
    return text.replace("@TORPOR@", torpor_bin)


def _torpor_bin() -> str:
    candidate = Path(sys.argv[0])
    if candidate.name == "torpor" and candidate.exists():
        return str(candidate.resolve())
    found = shutil.which("torpor")
    if found:
        return str(Path(found).resolve())
    return f"{sys.executable} -m torpor.cli"


@cli.command("install-service")
@click.argument("kind", type=click.Choice(["agent", "coordinator"]))
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/etc/systemd/system"),
              show_default=True, help="Where to write the unit file.")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/etc/torpor"),
              show_default=True, help="Where the settings file goes (never overwritten).")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of installing it.")
def install_service(kind: str, unit_dir: Path, config_dir: Path, print_only: bool) -> None:
    """Install the systemd unit for the agent or the coordinator.

    Writes UNIT_DIR/torpor-KIND.service (ExecStart pointing at this torpor),
    a commented CONFIG_DIR/KIND.env if there is none, and reloads systemd.
    Then: edit the env file, put the secrets in place, `systemctl enable --now torpor-KIND`.
    """
    unit = render_unit(kind, _torpor_bin())
    if print_only:
        click.echo(unit, nl=False)
        return
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / f"torpor-{kind}.service"
    path.write_text(unit)
    config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config_dir, 0o750)
    env = config_dir / f"{kind}.env"
    if not env.exists():
        env.write_text(ENV_TEMPLATES[kind])
        env.chmod(0o600)
    click.echo(f"wrote {path}")
    click.echo(f"settings: {env}")
    secrets = ["join-token"] if kind == "agent" else ["api-keys", "join-tokens"]
    for name in secrets:
        if not (config_dir / name).exists():
            click.echo(f"create {config_dir / name} (mode 0600): "
                       + ("the agent's join token" if name == "join-token" else f"one {name[:-1]} per line"))
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        click.echo(f"then: systemctl enable --now torpor-{kind}")
    else:
        click.echo("systemd is not running here; the unit will be picked up at the next boot")
