"""`torpor snapshots list|fetch|keys` on real checkpoints in a file store."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import assert_eventually
from torpor.agent._snapshot import upload_image

CLI = [sys.executable, "-m", "torpor.cli", "snapshots"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def test_list_and_fetch_verify_and_decrypt_a_checkpoint(make_agent, file_store, tmp_path):
    agent = make_agent(file_store)
    c = agent.start(run_id="run-cli", args=["/usr/bin/python3", "-c", "import time\nwhile True: time.sleep(1)"])
    assert_eventually(lambda: c.running, timeout=10)
    manifest = agent.mgr.checkpoint(c)
    kek = agent.mgr.keys.current
    store = file_store.url
    listed = json.loads(subprocess.run([*CLI, "list", "run-cli", "--store", store, "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert [i["id"] for i in listed] == [manifest.checkpoint_id] and listed[0]["kind"] == "suspend"
    assert listed[0]["key_id"] == kek.id
    assert f"key {kek.id}" in run("list", "run-cli", "--store", store).stdout

    # Without the key: it says the snapshot is encrypted, with which key, and what to pass.
    nokey = run("fetch", "run-cli", str(tmp_path / "nokey"), "--store", store)
    assert nokey.returncode == 1 and f"is encrypted with snapshot key {kek.id}" in nokey.stderr, nokey.stderr
    assert "--key-file" in nokey.stderr and "--db" in nokey.stderr
    assert not (tmp_path / "nokey").exists()
    key_file = tmp_path / "snapshot.key"
    key_file.write_text(kek.key.hex() + "\n")
    key_file.chmod(0o644)
    loose = run("fetch", "run-cli", str(tmp_path / "loose"), "--store", store, "--key-file", str(key_file))
    assert loose.returncode == 1 and "mode 0644" in loose.stderr and "chmod 600" in loose.stderr, loose.stderr
    key_file.chmod(0o600)
    other = tmp_path / "other.key"
    other.write_text("00" * 32)
    other.chmod(0o600)
    wrong = run("fetch", "run-cli", str(tmp_path / "wrong"), "--store", store, "--key-file", str(other))
    assert wrong.returncode == 1 and kek.id in wrong.stderr and "given: kek-" in wrong.stderr, wrong.stderr

    dest = tmp_path / "img"
    out = run("fetch", "run-cli", str(dest), "--store", store, "--key-file", str(other), "--key-file", str(key_file))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in manifest.files)
    assert "verified" in out.stdout and f"decrypted with {kek.id}" in out.stdout

    # A checkpoint from before encryption needs no key; `keys` counts checkpoints per key.
    upload_image(file_store, dest, keys=None, run_id="run-cli", checkpoint_id="ck-plain", kind="suspend",
                 criu_version=manifest.criu_version, deployment_version="")
    plain = run("fetch", "run-cli", str(tmp_path / "plain"), "--store", store, "--checkpoint", "ck-plain")
    assert plain.returncode == 0 and "(not encrypted)" in plain.stdout, plain.stderr
    assert json.loads(run("keys", "--store", store, "--json").stdout) == {kek.id: 1, "none": 1}
    assert f"{kek.id}" in run("keys", "--store", store).stdout

    blob = bytearray(file_store.get_bytes(manifest.archive_key))
    blob[-10] ^= 0xFF
    file_store.put_bytes(manifest.archive_key, bytes(blob))
    bad = run("fetch", "run-cli", str(tmp_path / "bad"), "--store", store, "--key-file", str(key_file),
              "--checkpoint", manifest.checkpoint_id)
    assert bad.returncode == 1 and "corrupt" in bad.stderr and "fails authentication" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()
    missing = run("fetch", "run-nope", str(tmp_path / "x"), "--store", store)
    assert missing.returncode == 1 and "no complete checkpoint" in missing.stderr
