"""Snapshots encrypted at rest, end to end through `torpor dev`: the coordinator hands the agent its key when
it registers, a run suspends as a sealed snapshot holding none of its secrets in clear, and restores with that
key."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys

from e2e_support import trigger, wait_status
from torpor._seal import read_key_file


def test_a_run_suspends_sealed_under_the_coordinators_key_and_restores(stack, tmp_path):
    marker = secrets.token_hex(16)
    secret = hashlib.shake_256(marker.encode()).digest(1 << 20)  # what the task holds (e2e_tasks.secret_wait)
    phrase = f"the database password is {marker}".encode()
    run_id = trigger(stack, "secret-wait", {"marker": marker, "seconds": 30})
    run = wait_status(stack, run_id, {"SUSPENDED"}, timeout=90)
    ckpt = [c for c in run["checkpoints"] if c["kind"] == "SUSPEND"][-1]
    folder = (stack.dir / "store" / ckpt["location"]).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    kek = read_key_file(stack.dir / "secrets" / "snapshot-key")  # the coordinator's --snapshot-key-file
    assert manifest["format"] == 3 and manifest["encryption"]["kek_id"] == kek.id == ckpt["key_id"]
    assert (folder / "snapshot.sealed").exists() and not (folder / "snapshot.zst").exists()
    for f in folder.iterdir():
        data = f.read_bytes()
        for plain in (secret[:4096], secret[700_000:700_064], phrase, marker.encode(), kek.key, kek.key.hex().encode()):
            assert plain not in data, f"{f.name} holds {plain[:16]!r}... in clear"

    # The operator's view: with the key file the image opens, and it does hold the secret.
    dest = tmp_path / "image"
    out = subprocess.run([sys.executable, "-m", "torpor.cli", "snapshots", "fetch", run_id, str(dest), "--store",
                          f"file://{stack.dir}/store", "--key-file", str(stack.dir / "secrets" / "snapshot-key")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"decrypted with {kek.id}" in out.stdout, out.stderr
    assert secret[700_000:700_064] in b"".join(p.read_bytes() for p in dest.glob("pages-*.img"))

    done = wait_status(stack, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=120)
    assert done["status"] == "COMPLETED", done
    assert done["output"]["before"] == done["output"]["after"] == hashlib.sha256(secret + phrase).hexdigest()
    assert done["output"]["attempt"] == 1
    assert any(e["type"] == "restored" for e in done["events"]), done["events"]
