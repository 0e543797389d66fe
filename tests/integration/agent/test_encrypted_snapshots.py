"""Snapshots are encrypted at rest, with real runc and CRIU: no byte of a task's secrets reaches the store in
clear, the sealed checkpoint restores, and a checkpoint written before encryption (format 2) still restores.

The sealing itself (tampering, truncation, swapped segments, wrong keys) is unit-tested in
tests/unit/test_seal.py and tests/unit/agent/test_snapshot_format.py.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from pathlib import Path

import pytest

from helpers import assert_eventually
from torpor._errors import IntegrityError, MissingKeyError
from torpor.agent import Kek, Keyring
from torpor.agent._snapshot import checkpoint_prefix, upload_image
from torpor.agent._unpack import download_image

HERE = Path(__file__).resolve().parent
TASK = ["/usr/bin/python3", "/app/secret_task.py"]


@pytest.fixture
def app_dir(state_dir: Path) -> Path:
    d = state_dir / "app"
    d.mkdir()
    shutil.copy(HERE / "secret_task.py", d / "secret_task.py")
    d.chmod(0o755)
    return d


def secret_lines(agent, run_id: str) -> list[tuple[str, int]]:
    log = agent.mgr.run_log(run_id, "stdout")
    text = log.read_text() if log.exists() else ""
    return [(p[1], int(p[2])) for p in (ln.split() for ln in text.splitlines()) if len(p) == 3 and p[0] == "secret"]


def expected(marker: str) -> tuple[bytes, bytes, str]:
    """What secret_task.py holds: 1 MiB of derived bytes, a sentence, and the digest it prints."""
    secret = hashlib.shake_256(marker.encode()).digest(1 << 20)
    phrase = f"the database password is {marker}".encode()
    return secret, phrase, hashlib.sha256(secret + phrase).hexdigest()


def stored_objects(store, run_id: str, checkpoint_id: str) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for k in store.list(checkpoint_prefix(run_id, checkpoint_id) + "/")}


def test_a_checkpoint_in_the_store_holds_no_plaintext_and_restores(make_agent, any_store, app_dir, tmp_path):
    marker = secrets.token_hex(16)
    secret, phrase, digest = expected(marker)
    needle = secret[500_000:500_064]  # random bytes: zstd stores them as they are, only sealing hides them
    a = make_agent(any_store, "host-a")
    c = a.start(run_id="run-secret", args=TASK, app_dir=app_dir, env={"MARKER": marker})
    assert_eventually(lambda: secret_lines(a, "run-secret"), timeout=30)
    assert secret_lines(a, "run-secret")[-1][0] == digest

    manifest = a.mgr.checkpoint(c, kind="suspend")
    assert manifest.format == 3 and manifest.encryption is not None
    assert manifest.encryption.kek_id == a.mgr.keys.current.id
    before = secret_lines(a, "run-secret")[-1][1]
    objects = stored_objects(any_store, "run-secret", manifest.checkpoint_id)
    assert set(objects) >= {manifest.key, manifest.archive_key}
    for key, data in objects.items():
        for plain in (needle, phrase, marker.encode(), a.mgr.keys.current.key):
            assert plain not in data, f"{key} holds {plain[:20]!r}... in clear"

    # Control: the image itself does hold the secret (so the search above could have found it) ...
    image = tmp_path / "image"
    download_image(any_store, manifest, image, keys=a.mgr.keys)
    pages = b"".join(p.read_bytes() for p in image.glob("pages-*.img"))
    assert needle in pages and phrase in pages
    # ... and so does an unencrypted archive of it, the format torpor wrote before.
    plain = upload_image(any_store, image, keys=None, run_id="run-secret", checkpoint_id="ck-clear", kind="suspend",
                         criu_version=manifest.criu_version, deployment_version="")
    assert plain.format == 2 and needle in any_store.get_bytes(plain.archive_key)

    # An agent without the key refuses before downloading anything, and names the key it needs.
    stranger = make_agent(any_store, "host-c", keys=Keyring(Kek.generate()))
    with pytest.raises(MissingKeyError, match=manifest.encryption.kek_id):
        stranger.restore(manifest.key, app_dir=app_dir)
    assert stranger.runc.list() == []

    # Another host with the key (here as an older key, after a rotation) restores it: same memory, counting on.
    b = make_agent(any_store, "host-b", keys=Keyring(Kek.generate(), (a.mgr.keys.current,)))
    b.restore(manifest.key, app_dir=app_dir, sealed_under=manifest.encryption.kek_id)
    assert_eventually(lambda: [n for d, n in secret_lines(b, "run-secret") if d == digest and n > before], timeout=30)


def test_a_checkpoint_from_before_encryption_still_restores(make_agent, file_store, app_dir, tmp_path):
    """A run suspended by a torpor that did not encrypt (manifest format 2) is not stranded by the upgrade."""
    marker = secrets.token_hex(16)
    digest = expected(marker)[2]
    a = make_agent(file_store, "host-a")
    c = a.start(run_id="run-old", args=TASK, app_dir=app_dir, env={"MARKER": marker})
    assert_eventually(lambda: secret_lines(a, "run-old"), timeout=30)
    sealed = a.mgr.checkpoint(c, kind="suspend")
    before = secret_lines(a, "run-old")[-1][1]
    # The same image as the old torpor stored it: a plain zstd record stream under snapshot.zst, format 2.
    image = tmp_path / "image"
    download_image(file_store, sealed, image, keys=a.mgr.keys)
    old = upload_image(file_store, image, keys=None, run_id="run-old", checkpoint_id="ck-v2", kind="suspend",
                       criu_version=sealed.criu_version, deployment_version="")
    assert old.format == 2 and old.encryption is None and old.archive_key.endswith("/snapshot.zst")
    assert b'"format": 2' in file_store.get_bytes(old.key) and b"encryption" not in file_store.get_bytes(old.key)

    b = make_agent(file_store, "host-b")
    # Only where no key was recorded for the checkpoint (it was recorded before encryption): for one recorded
    # as sealed, an unencrypted manifest is a forgery.
    with pytest.raises(IntegrityError, match="it was altered"):
        b.restore(old.key, app_dir=app_dir, sealed_under=sealed.encryption.kek_id)
    assert b.runc.list() == []
    b.restore(old.key, app_dir=app_dir)
    assert_eventually(lambda: [n for d, n in secret_lines(b, "run-old") if d == digest and n > before], timeout=30)
