"""The heart of torpor: a process's state survives dump → store → restore elsewhere.

Real runc, real CRIU 4.2, and both real stores (a directory and MinIO).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

from helpers import assert_eventually, free_port, in_netns
from torpor._errors import IntegrityError

HERE = Path(__file__).resolve().parent


@pytest.fixture
def app_dir(state_dir: Path) -> Path:
    d = state_dir / "app"
    d.mkdir()
    for name in ("stateful_task.py", "counter_task.py"):
        shutil.copy(HERE / name, d / name)
    d.chmod(0o755)
    return d


def ask(port: int, pid: int | None = None) -> dict:
    """The task's report, from its server on 127.0.0.1:port (in the network namespace of container ``pid``)."""
    def talk() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"report\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    return json.loads(in_netns(pid, talk) if pid is not None else talk())


def log_text(agent, run_id: str) -> str:
    path = agent.mgr.run_log(run_id, "stdout")
    return path.read_text() if path.exists() else ""


def counts(agent, run_id: str) -> list[int]:
    return [int(line.split()[1]) for line in log_text(agent, run_id).splitlines() if line.startswith("count ")]


def test_all_state_survives_stop_checkpoint_and_restore_elsewhere(make_agent, any_store, app_dir):
    port = free_port()
    a1 = make_agent(any_store, "host-a")
    a2 = make_agent(any_store, "host-b")
    c = a1.start(run_id="run-state", args=["/usr/bin/python3", "/app/stateful_task.py"], app_dir=app_dir,
                 env={"PORT": str(port)})
    assert_eventually(lambda: "ready" in log_text(a1, "run-state"), timeout=60)
    before = ask(port, c.pid)
    assert before["heap_len"] == 200 << 20 and before["heap_sha_now"] == before["heap_sha"]
    assert before["threads"] == 3 and before["child_alive"] and before["uid"] == 1000

    manifest = a1.mgr.checkpoint(c, kind="suspend", deployment_version="v-test")
    # Stop mode: the container is gone on the first host, the snapshot is in the store.
    assert not c.running
    assert a1.runc.list() == []
    assert any_store.exists(manifest.key) and any_store.exists(manifest.archive_key)
    assert manifest.raw_bytes > 200 << 20
    assert manifest.archive_size < 0.6 * manifest.raw_bytes  # the repetitive half compresses away
    assert manifest.criu_version.startswith("4.")
    with pytest.raises(OSError):
        ask(port)  # nothing listens while the run is a snapshot (nor on the host, ever: it has a namespace)

    r = a2.restore(manifest.key, app_dir=app_dir)
    assert r.id != c.id and r.bundle != c.bundle
    # In a fresh network namespace, where the restored listener listens again.
    after = assert_eventually(lambda: ask(port, r.pid), timeout=30)
    assert after["pid"] == before["pid"]
    assert after["heap_sha_now"] == before["heap_sha"]  # 200 MB of memory came back intact
    assert after["threads"] == 3
    assert after["counters"]["a"] > before["counters"]["a"] and after["counters"]["b"] > before["counters"]["b"]
    assert after["file_content"] == "line one\nline two\n" and after["file_offset"] == 5
    assert after["child_pid"] == before["child_pid"] and after["child_alive"]
    # ...and the threads keep counting after the restore.
    assert_eventually(lambda: ask(port, r.pid)["counters"]["a"] > after["counters"]["a"] + 10, timeout=10)


def test_established_connection_comes_back_closed_and_listener_listens(make_agent, file_store, app_dir):
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(outside.accept()[0]), daemon=True).start()
    port = free_port()
    # The server "outside" is on the host's loopback: host network, which the agent must allow.
    agent = make_agent(file_store, allow_host_network=True)
    c = agent.start(run_id="run-tcp", args=["/usr/bin/python3", "/app/stateful_task.py"], app_dir=app_dir,
                    env={"PORT": str(port), "HEAP_MB": "2", "OUTSIDE_PORT": str(outside.getsockname()[1])},
                    network="host")
    assert_eventually(lambda: "ready" in log_text(agent, "run-tcp"), timeout=30)
    assert ask(port)["outside"] == "open"
    manifest = agent.mgr.checkpoint(c)
    accepted[0].close()
    agent.restore(manifest, app_dir=app_dir)
    report = assert_eventually(lambda: ask(port), timeout=30)  # the listening socket listens again
    assert report["outside"].startswith("closed")  # tcp-close: the client library reconnects
    outside.close()


def test_leave_running_keeps_process_and_checkpoint_restores(make_agent, file_store, app_dir):
    agent = make_agent(file_store)
    c = agent.start(run_id="run-live", args=["/usr/bin/python3", "/app/counter_task.py"], app_dir=app_dir)
    assert_eventually(lambda: len(counts(agent, "run-live")) > 5, timeout=30)
    manifest = agent.mgr.checkpoint(c, kind="periodic", leave_running=True)
    at_checkpoint = max(counts(agent, "run-live"))
    assert c.running
    assert_eventually(lambda: max(counts(agent, "run-live")) > at_checkpoint + 10, timeout=10)

    # A restore of that checkpoint (the original still running beside it)
    # continues from the checkpoint's count, not from 1.
    restored_log = agent.mgr.run_log("run-live", "stdout")
    size_before = restored_log.stat().st_size
    r = agent.restore(manifest, app_dir=app_dir)
    assert r.running and c.running

    def restored_counts() -> list[int]:
        return [int(x.split()[1]) for x in restored_log.read_text()[size_before:].splitlines() if x.startswith("count ")]

    assert_eventually(lambda: len(restored_counts()) > 0, timeout=10)
    assert 1 not in restored_counts()


def test_corrupt_snapshot_is_refused(make_agent, any_store, app_dir):
    agent = make_agent(any_store)
    c = agent.start(run_id="run-bad", args=["/usr/bin/python3", "/app/counter_task.py"], app_dir=app_dir)
    assert_eventually(lambda: counts(agent, "run-bad"), timeout=30)
    manifest = agent.mgr.checkpoint(c)
    blob = bytearray(any_store.get_bytes(manifest.archive_key))
    blob[len(blob) // 2] ^= 0x01
    any_store.put_bytes(manifest.archive_key, bytes(blob))
    with pytest.raises(IntegrityError, match="corrupt"):
        agent.restore(manifest, app_dir=app_dir)
    assert agent.runc.list() == []  # nothing was restored
    # A truncated one is refused as well.
    any_store.put_bytes(manifest.archive_key, bytes(blob[: len(blob) // 3]))
    with pytest.raises(IntegrityError):
        agent.restore(manifest, app_dir=app_dir)
    assert agent.runc.list() == []
