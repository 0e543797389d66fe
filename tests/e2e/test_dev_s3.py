"""`torpor dev --store s3://...` keeps bundles and snapshots in a real S3 server (MinIO)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from e2e_support import PROJECT, Stack, _need_stack, trigger, wait_status
from helpers import free_port


def test_dev_with_an_s3_store(s3_target):
    _need_stack()
    server = s3_target.server
    work = Path(tempfile.mkdtemp(prefix="torpor-e2e-s3-", dir="/var/tmp"))
    work.chmod(0o711)
    stack = Stack(work / "data", free_port(), 1)
    env = {"TORPOR_S3_ENDPOINT": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
           "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": server.region or "us-east-1"}
    try:
        stack.start("--store", s3_target.url, "--suspend-threshold", "2", env=env)
        stack.cli("deploy", str(PROJECT))
        run_id = trigger(stack, "big-state", {"mb": 8, "seconds": 6})
        waiting = wait_status(stack, run_id, {"SUSPENDED"}, timeout=60)
        keys = s3_target.raw_keys()  # while the run waits, its snapshot is in S3
        location = waiting["checkpoints"][-1]["location"]
        assert any(k.endswith(location) for k in keys), keys
        assert any(k.endswith(location.replace("manifest.json", "snapshot.sealed")) for k in keys), keys
        assert any("deployments/" in k for k in keys)
        done = wait_status(stack, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=90)
        assert done["status"] == "COMPLETED" and done["output"]["before"] == done["output"]["after"], done
        assert not (stack.dir / "store").exists()  # nothing went to the local directory
        # The store's server is the host's, not a task's: a run cannot reach it (docs/security.md, the network).
        minio = urlsplit(server.endpoint).netloc
        probe = wait_status(stack, trigger(stack, "net-probe", {"targets": [minio]}), {"COMPLETED", "FAILED"})
        assert probe["status"] == "COMPLETED" and probe["output"][minio] != "connected", probe
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
