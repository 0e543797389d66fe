"""The deploy side of environments: resolve a project's dependencies with uv, build them, upload them once.

uv (the `uv` package on PyPI: one static binary) resolves and installs: it is
the fastest resolver/installer there is for Python, well kept, and installs
for a Python version and platform other than its own (``--python-version``,
``--python-platform``), which is what building for the agents needs. It uses
the machine's own index configuration: uv's if it has one, else pip's
(cli/_pip_index.py), read at run time. The built packages are kept in
``~/.cache/torpor/envs/<id>`` so a second deploy builds nothing; the coordinator
is asked whether it holds the environment, so it uploads nothing either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torpor._errors import ConfigError

PLATFORM = "x86_64-manylinux_2_28"
_CHUNK = 2 << 20


@dataclass
class Built:
    id: str
    python: str
    requirements: list[str]
    site: Path
    uploaded: bool = False
    size_bytes: int = 0


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not os.access(found, os.X_OK):
        try:
            from uv import find_uv_bin  # type: ignore[import-not-found]

            return find_uv_bin()
        except Exception:  # noqa: BLE001
            raise ConfigError("uv is needed to build the project's dependencies and was not found: pip install uv")
    return found


def _run(args: list[str], what: str) -> str:
    from torpor.cli._pip_index import uv_environment

    # The machine's index as pip is configured (uv does not read pip's files), unless uv is configured itself.
    proc = subprocess.run([_uv(), *args], capture_output=True, text=True, timeout=1800,
                          env=uv_environment(os.environ))
    if proc.returncode != 0:
        raise ConfigError(f"{what} failed:\n{(proc.stderr or proc.stdout).strip()[-4000:]}")
    return proc.stdout


def resolve(requirements: list[str], python: str) -> list[str]:
    """The exact versions uv chooses for ``requirements`` on ``python`` and the agents' platform."""
    from torpor.cli._progress import Stage

    n = len(requirements)
    with tempfile.TemporaryDirectory(prefix="torpor-req-") as d, \
            Stage(f"resolving {n} requirement{'s' if n != 1 else ''} for Python {python}"):
        src = Path(d) / "requirements.in"
        src.write_text("\n".join(requirements) + "\n")
        out = _run(["pip", "compile", str(src), "--python-version", python, "--python-platform", PLATFORM,
                    "--no-header", "--no-annotate", "--quiet"], "resolving the dependencies")
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def environment_id(pinned: list[str], python: str) -> str:
    text = "\n".join(sorted(pinned)) + f"\npython {python}\nplatform {PLATFORM}\n"
    return "env-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torpor" / "envs"


def build(pinned: list[str], python: str) -> Built:
    """Install the pinned set into the local cache (once per environment id)."""
    from torpor.cli._progress import Stage

    env_id = environment_id(pinned, python)
    site = cache_dir() / env_id / "site"
    if not site.is_dir():
        site.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".site.", dir=site.parent))
        try:
            req = Path(tmp.parent / f"{tmp.name}.requirements.txt")
            req.write_text("\n".join(pinned) + "\n")
            with Stage(f"building environment {env_id} ({len(pinned)} packages)"):
                _run(["pip", "install", "--target", str(tmp), "--python-version", python, "--python-platform",
                      PLATFORM, "--no-deps", "--quiet", "-r", str(req)], "installing the dependencies")
            try:
                os.rename(tmp, site)
            except OSError:
                if not site.is_dir():  # another deploy of the same set finished first: keep its copy
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            Path(tmp.parent / f"{tmp.name}.requirements.txt").unlink(missing_ok=True)
    return Built(id=env_id, python=python, requirements=pinned, site=site)


def target_python(project_python: str | None, agents: list[Any]) -> str:
    """The Python to build for: torpor.toml's, checked against the connected agents', or theirs."""
    from torpor.agent._environments import python_version

    reported = sorted({a.facts.python_version for a in agents if a.alive and a.facts.python_version})
    if project_python:
        if reported and project_python not in reported:
            raise ConfigError(f"torpor.toml asks for Python {project_python}, and the connected agents run Python "
                              f"{', '.join(reported)}: its packages would not load there. Set python = "
                              f"\"{reported[0]}\", or deploy to agents with Python {project_python}")
        return project_python
    if len(reported) > 1:
        raise ConfigError(f"the connected agents run different Pythons ({', '.join(reported)}): say which one the "
                          "project's packages are for with python = \"3.x\" in torpor.toml")
    return reported[0] if reported else python_version("/usr/bin/python3")


def upload(client: Any, built: Built) -> None:
    """Pack and upload the environment unless the coordinator holds it already."""
    from torpor._errors import ErrorCode, RPCError

    try:
        got = client.get_environment(built.id)
        built.size_bytes = got.size_bytes
        return
    except RPCError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
    from torpor._proto.v1 import coordinator_pb2
    from torpor.agent._environments import pack
    from torpor.cli._progress import Progress, Stage

    with tempfile.TemporaryDirectory(prefix="torpor-env-") as d:
        archive = Path(d) / "env.tar.zst"
        with Stage(f"packing environment {built.id}"):
            sha256, size = pack(built.site, archive)
        header = coordinator_pb2.Environment(id=built.id, sha256=sha256, size_bytes=size, python=built.python,
                                             platform=PLATFORM, requirements=built.requirements)
        progress = Progress(f"uploading environment {built.id}", size)

        def chunks():  # type: ignore[no-untyped-def]
            yield coordinator_pb2.EnvironmentChunk(header=header)
            with open(archive, "rb") as f:
                while data := f.read(_CHUNK):
                    progress(len(data))
                    yield coordinator_pb2.EnvironmentChunk(data=data)

        client.put_environment(chunks())
        progress.finish()
    built.uploaded, built.size_bytes = True, size
