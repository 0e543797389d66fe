"""`torpor snapshots list|fetch` on a real checkpoint in a file store."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import assert_eventually

CLI = [sys.executable, "-m", "torpor.cli", "snapshots"]


def test_list_and_fetch_verify_a_checkpoint(make_agent, file_store, tmp_path):
    agent = make_agent(file_store)
    c = agent.start(run_id="run-cli", args=["/usr/bin/python3", "-c", "import time\nwhile True: time.sleep(1)"])
    assert_eventually(lambda: c.running, timeout=10)
    manifest = agent.mgr.checkpoint(c)
    store = file_store.url
    listed = json.loads(subprocess.run([*CLI, "list", "run-cli", "--store", store, "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert [i["id"] for i in listed] == [manifest.checkpoint_id] and listed[0]["kind"] == "suspend"

    dest = tmp_path / "img"
    out = subprocess.run([*CLI, "fetch", "run-cli", str(dest), "--store", store], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in manifest.files)
    assert "verified" in out.stdout

    blob = bytearray(file_store.get_bytes(manifest.archive_key))
    blob[-10] ^= 0xFF
    file_store.put_bytes(manifest.archive_key, bytes(blob))
    bad = subprocess.run([*CLI, "fetch", "run-cli", str(tmp_path / "bad"), "--store", store], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "corrupt" in bad.stderr
    assert not (tmp_path / "bad").exists()
    missing = subprocess.run([*CLI, "fetch", "run-nope", str(tmp_path / "x"), "--store", store], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "no complete checkpoint" in missing.stderr
