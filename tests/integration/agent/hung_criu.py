"""A CRIU that stops itself at a named step, so a test can hang a dump or a restore exactly there.

runc drives CRIU in RPC mode (``criu swrk``), which still reads the configuration
file named by ``CRIU_CONFIG_FILE`` at start, action scripts included. The wrapper
installed as runc's ``--criu`` records its pid (``exec`` keeps it) and points CRIU
at a configuration with one action script; the script sends SIGSTOP to the
recorded CRIU when CRIU reaches the chosen step (``post-dump``: the image is
written and the container still frozen; ``pre-restore``: before anything is
restored). No timing is involved: the hang happens at that step on every run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psutil

from torpor.agent import Runc


@dataclasses.dataclass
class HungCriu:
    pid_file: Path

    def process(self) -> psutil.Process | None:
        """The CRIU stopped at its step, once it has stopped there."""
        try:
            proc = psutil.Process(int(self.pid_file.read_text()))
            return proc if proc.status() == psutil.STATUS_STOPPED else None
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None


def hang_criu_at(runc: Runc, step: str, workdir: Path) -> HungCriu:
    """Make every CRIU ``runc`` starts from now on stop itself at ``step`` (a CRIU action name)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file = workdir / "criu.pid"
    script = workdir / "hang.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$CRTOOLS_SCRIPT_ACTION" = "{step}" ] && kill -STOP "$(cat {pid_file})"\n'
        "exit 0\n"
    )
    config = workdir / "criu.conf"
    config.write_text(f"action-script {script}\n")
    wrapper = workdir / "criu"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo $$ > {pid_file}\n"
        f"CRIU_CONFIG_FILE={config} exec {runc.criu.path} \"$@\"\n"
    )
    for f in (script, wrapper):
        f.chmod(0o755)
    runc.criu = dataclasses.replace(runc.criu, path=str(wrapper))
    return HungCriu(pid_file)
