"""Deploying a project that depends on numpy and pandas, and a fresh agent fetching its environment.

Prints one JSON object. Runs a `torpor dev` stack (one agent, file store):

  sudo .venv/bin/python bench/deps.py

  first_deploy_s    torpor deploy with empty caches (uv's download cache and torpor's build cache
                    both new): resolve, download, install, pack, upload, register
  second_deploy_s   the same deploy again, unchanged: nothing built, nothing uploaded
  fetch_s           a fresh agent cache: download from the store, check the sha256, unpack
  environment_bytes the packed environment in the store; unpacked_bytes on the agent
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from e2e_support import Stack  # noqa: E402
from helpers import free_port  # noqa: E402

TASKS = "import numpy, pandas\nfrom torpor import task\n\n@task(id='frame')\ndef frame(p):\n    return int(pandas.DataFrame({'a': numpy.arange(10)}).a.sum())\n"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="torpor-bench-deps-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    project = work / "project"
    project.mkdir()
    (project / "torpor.toml").write_text('project = "bench-deps"\nmodules = ["tasks"]\n'
                                         'dependencies = ["numpy>=1.26", "pandas>=2.2"]\n')
    (project / "tasks.py").write_text(TASKS)
    stack = Stack(work / "data", free_port(), 1)
    env = {"UV_CACHE_DIR": str(work / "uv-cache"), "XDG_CACHE_HOME": str(work / "cache")}
    os.environ.update(env)
    try:
        stack.start()
        t = time.monotonic()
        first = json.loads(stack.cli("deploy", str(project), "--json", timeout=1800).stdout)
        first_s = time.monotonic() - t
        t = time.monotonic()
        second = json.loads(stack.cli("deploy", str(project), "--json", timeout=1800).stdout)
        second_s = time.monotonic() - t
        from torpor.agent._environments import Environments
        from torpor.store import open_store

        e = first["environment"]
        store = open_store(f"file://{stack.dir / 'store'}")
        info = stack.client().get_environment(e["id"])
        cache = work / "fresh-agent"
        t = time.monotonic()
        unpacked = Environments(store, cache, e["python"]).get(e["id"], info.sha256, e["python"], info.location)
        fetch_s = time.monotonic() - t
        run = stack.client().trigger("frame", {}).run_id
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = stack.client().get_run(run)
            if r.output_json:
                break
            time.sleep(0.2)
        print(json.dumps({
            "bench": "deps", "requirements": e["requirements"], "python": e["python"],
            "first_deploy_s": round(first_s, 2), "first_uploaded": e["uploaded"],
            "second_deploy_s": round(second_s, 2), "second_uploaded": second["environment"]["uploaded"],
            "environment_bytes": info.size_bytes, "environment_sha256": info.sha256, "unpacked_bytes": _du(unpacked), "fetch_s": round(fetch_s, 2),
            "task_output": r.output_json,
        }, indent=1))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
