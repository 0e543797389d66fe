"""README.md's walk-through, run exactly as written.

The Python block becomes tasks.py next to the two-line torpor.toml the README
describes, in a new directory; the shell block then runs there, line by line
in one bash, with `torpor` found on PATH the way `make demo` puts it there.
Nothing is substituted: the README's own `torpor runs wake` ends the two-hour
wait and `torpor tokens complete --run` answers the token. If the README and
the product drift apart, this test fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e_support import _need_stack, runc_list_at
from helpers import need

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = "### "


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def walkthrough() -> tuple[str, str, list[str]]:
    """(tasks.py, torpor.toml, shell lines) as the README gives them."""
    text = README.read_text()
    (tasks_py,) = [b for b in _blocks("python") if "@task" in b]
    assert 'project = "video"' in text and 'modules = ["tasks"]' in text, "README no longer names torpor.toml's lines"
    toml = 'project = "video"\nmodules = ["tasks"]\n'
    (shell,) = [b for b in _blocks("sh") if "torpor dev --detach" in b]
    lines = [line for line in shell.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return tasks_py, toml, lines


def _script(lines: list[str]) -> str:
    out = ["set -euo pipefail"]
    for line in lines:
        out.append(f"echo {shlex.quote(MARK + line)}")
        out.append(line)
    return "\n".join(out) + "\n"


def _sections(transcript: str) -> dict[str, str]:
    """Output of each command, keyed by the command's first words (later runs of one command get #2, #3)."""
    out: dict[str, str] = {}
    for chunk in transcript.split(MARK)[1:]:
        cmd, _, body = chunk.partition("\n")
        key = " ".join(cmd.split("#")[0].split()[:4])
        n = 2
        while key in out:
            key = f"{' '.join(cmd.split('#')[0].split()[:4])} #{n}"
            n += 1
        out[key] = body
    return out


def test_examples_video_is_the_readme_project():
    tasks_py, toml, _ = walkthrough()
    assert (ROOT / "examples" / "video" / "tasks.py").read_text() == tasks_py
    assert (ROOT / "examples" / "video" / "torpor.toml").read_text() == toml


def test_readme_walkthrough_as_written():
    _need_stack()
    with socket.socket() as s:
        need(s.connect_ex(("127.0.0.1", 7433)) != 0,
             "the README's torpor dev uses port 7433, and something already listens there")
    tasks_py, toml, lines = walkthrough()
    base = Path(tempfile.mkdtemp(prefix="torpor-readme-", dir="/var/tmp"))
    base.chmod(0o711)
    project = base / "video"
    project.mkdir()
    (project / "tasks.py").write_text(tasks_py)
    (project / "torpor.toml").write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORPOR_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    data = project / ".torpor"
    try:
        # stderr joins stdout so each command's output, logs included, stays under its own line.
        proc = subprocess.run(["bash", "-c", _script(lines)], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        transcript = proc.stdout
        assert proc.returncode == 0, f"the walk-through stopped (exit {proc.returncode}):\n{transcript[-6000:]}"
        out = _sections(proc.stdout)

        assert "torpor dev is running" in out["torpor dev --detach"], transcript
        assert re.search(r"^video [0-9a-f]{20} deployed: 2 task\(s\)", out["torpor deploy ."], re.M), transcript
        first = out["torpor runs wait $RUN"]
        assert "SUSPENDED" in first and "torpor runs wake" in first, transcript
        show = out["torpor runs show $RUN"]
        assert "SUSPENDED" in show and "waiting  until" in show and "SUSPEND " in show, transcript
        assert "RESTORING" in out["torpor runs wake $RUN"], transcript
        assert re.search(r"SUSPENDED\s+waiting on token tok_", out["torpor runs wait $RUN #2"]), transcript
        assert "completed (run run_" in out["torpor tokens complete --run"], transcript
        final = out["torpor runs wait $RUN #3"]
        assert "COMPLETED" in final, transcript
        output = json.loads(final.split("COMPLETED", 1)[1].strip())
        assert output == {"frames": 10000, "approved": True,
                          "thumbs": ["thumb-0.jpg", "thumb-1.jpg", "thumb-2.jpg"]}, transcript
        assert "approve with: torpor tokens complete tok_" in out["torpor runs logs $RUN"], transcript
        assert "stopped torpor dev" in out["torpor dev --stop"], transcript

        # Nothing of the stack is left: no container of its agent, no lock holder.
        assert runc_list_at(data / "agents" / "dev-agent-1") == []
        from torpor._devstack import running_pid

        assert running_pid(data) is None
        # What deploy sent was the code, not the dev stack beside it.
        dry = subprocess.run(["torpor", "deploy", "--dry-run", "--json", "."], cwd=project, env=env,
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert sorted(f["path"] for f in json.loads(dry.stdout)["files"]) == ["tasks.py", "torpor.toml"]
    finally:
        subprocess.run(["torpor", "dev", "--stop"], cwd=project, env=env, capture_output=True, timeout=120)
        for c in runc_list_at(data / "agents" / "dev-agent-1"):
            subprocess.run(["runc", "--root", str(data / "agents" / "dev-agent-1" / "runc"), "delete", "-f", c["id"]])
        shutil.rmtree(base, ignore_errors=True)
