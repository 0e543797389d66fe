"""Proof that the ground holds: CRIU and runc really checkpoint and restore here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import assert_eventually, need, need_root
from torpor.agent._criu import find_criu, log_excerpt
from torpor.agent._oci import ContainerSpec, write_bundle
from torpor.agent._runc import Runc

COUNTER = "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.02)\n"


def _criu():
    need_root()
    try:
        return find_criu()
    except Exception as exc:  # noqa: BLE001 - turned into skip/fail with the reason
        need(False, f"no usable CRIU: {exc}")


def _numbers(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


@pytest.fixture
def scratch():
    d = Path(tempfile.mkdtemp(prefix="torpor-ground-", dir="/var/tmp"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_criu_dump_and_restore_continue_a_python_counter(scratch: Path) -> None:
    criu = _criu()
    out = scratch / "out.txt"
    images = scratch / "img"
    images.mkdir()
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", COUNTER], stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                start_new_session=True)
    restored_pid = None
    try:
        assert_eventually(lambda: len(_numbers(out)) > 10, timeout=10)
        dump = subprocess.run([criu.path, "dump", "-t", str(proc.pid), "-D", str(images), "-o", "dump.log"],
                              capture_output=True, text=True)
        assert dump.returncode == 0, log_excerpt(images / "dump.log")
        assert proc.wait(timeout=10) != 0  # the dump ended the original
        at_dump = _numbers(out)[-1]
        restore = subprocess.run([criu.path, "restore", "-D", str(images), "-d", "-o", "restore.log"],
                                 capture_output=True, text=True)
        assert restore.returncode == 0, log_excerpt(images / "restore.log")
        restored_pid = proc.pid  # CRIU restores the same pid
        assert_eventually(lambda: _numbers(out)[-1] > at_dump + 5, timeout=10)
        numbers = _numbers(out)
        # The counter continued from where it was: no restart at 1, no gap or repeat.
        assert numbers == list(range(1, len(numbers) + 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if restored_pid is not None:
            try:
                os.kill(restored_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_runc_checkpoint_restores_into_other_bundle_and_id(scratch: Path) -> None:
    criu = _criu()
    need(shutil.which("runc") is not None, "needs runc")
    runc = Runc(root=scratch / "runc", criu=criu)
    app = scratch / "app"
    app.mkdir(mode=0o755)
    (app / "counter.py").write_text(COUNTER)

    def bundle(name: str) -> Path:
        spec = ContainerSpec(args=["/usr/bin/python3", "/app/counter.py"], socket_dir=scratch / f"sock-{name}", app_dir=app)
        return write_bundle(scratch / name, spec)

    logs = []
    procs = []

    def spawn(fn, *args, **kw):
        log = open(scratch / f"log{len(logs)}", "wb")
        logs.append(scratch / f"log{len(logs)}")
        p = fn(*args, stdout=log.fileno(), stderr=log.fileno(), **kw)
        log.close()
        procs.append(p)
        return p

    try:
        b1 = bundle("bundle-one")
        spawn(runc.spawn_run, "ground-one", b1, pid_file=b1 / "pid")
        assert_eventually(lambda: len(_numbers(logs[0])) > 10, timeout=20)
        runc.checkpoint("ground-one", image_dir=scratch / "img", work_dir=scratch / "work", leave_running=False)
        assert procs[0].wait(timeout=10) != 0
        at_dump = _numbers(logs[0])[-1]
        assert runc.state("ground-one") is None
        os.chmod(scratch / "img", 0o755)  # see ContainerManager.restore
        b2 = bundle("bundle-two")
        spawn(runc.spawn_restore, "ground-two", b2, image_dir=scratch / "img", work_dir=scratch / "work2",
              pid_file=b2 / "pid")
        assert_eventually(lambda: runc.state("ground-two") is not None, timeout=20)
        assert runc.state("ground-two").bundle == str(b2)
        assert_eventually(lambda: _numbers(logs[1]), timeout=10)
        # The restored container writes to its new stdout and goes on from the dump's value.
        assert _numbers(logs[1])[0] == at_dump + 1
    finally:
        for cid in ("ground-one", "ground-two"):
            runc.delete(cid)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
