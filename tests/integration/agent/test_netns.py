"""Each container gets a network namespace of its own: egress through NAT, loopback only, or (if allowed) the host's.

The outside world is a network namespace the test makes ("inet"), joined to the
host by a veth pair, with a server in it; the host serves the same port on
all its addresses. A run in egress mode reaches the first and not the second,
nor another run; a run in none mode reaches neither; two runs serve one port
on their own loopbacks, and both serve it again, in fresh namespaces of their
modes, once suspended and restored on another agent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from counter_support import app_with
from helpers import assert_eventually

from torpor._errors import ConfigError

PROBE = ["/usr/bin/python3", "/app/net_probe.py"]
SERVER = ("import socket,sys\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n"
          "while True:\n"
          "    c,_=s.accept(); c.sendall(sys.argv[3].encode()+b'\\n'); c.close()\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inet:
    """A namespace standing in for the internet: 198.18.N.2 behind the host's 198.18.N.1."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.veth = f"tinet-{tag}", f"tin{tag}"
        n = int(tag[:2], 16)
        self.host_addr, self.addr = f"198.18.{n}.1", f"198.18.{n}.2"
        self.procs: list[subprocess.Popen[bytes]] = []
        sh = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.veth)
        sh("ip", "link", "set", self.veth, "up")
        for cmd in (["addr", "add", f"{self.addr}/30", "dev", "eth0"], ["link", "set", "eth0", "up"],
                    ["link", "set", "lo", "up"]):
            sh("ip", "-n", self.ns, *cmd)

    def serve(self, port: int, where: str = "inet") -> None:
        """A server in the inet namespace, or on every address of the host."""
        prefix = ["ip", "netns", "exec", self.ns] if where == "inet" else []
        proc = subprocess.Popen([*prefix, sys.executable, "-c", SERVER, "0.0.0.0", str(port), where])
        self.procs.append(proc)
        probe_ns = self.ns if where == "inet" else None

        def up() -> bool:
            cmd = ["ip", "netns", "exec", probe_ns] if probe_ns else []
            return subprocess.run([*cmd, sys.executable, "-c",
                                   f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                                  capture_output=True).returncode == 0
        assert_eventually(up, timeout=10)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def inet():
    net = Inet()
    yield net
    net.close()


def probe_app(state_dir: Path) -> Path:
    return app_with(state_dir, "net_probe.py")


def lines(agent, run_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    path = agent.mgr.run_log(run_id, "stdout")
    return path.read_text().splitlines() if path.exists() else []


def tail(agent, run_id: str) -> str:  # type: ignore[no-untyped-def]
    out = [agent.mgr.run_log(run_id, s) for s in ("stdout", "stderr")]
    return " | ".join(p.read_text()[-800:] for p in out if p.exists())


def probes(agent, run_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    try:
        assert_eventually(lambda: "probed" in lines(agent, run_id), timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{run_id} never finished probing: {tail(agent, run_id)}") from exc
    return {ln.split()[1]: " ".join(ln.split()[2:]) for ln in lines(agent, run_id) if ln.startswith("probe ")}


def self_ok(agent, run_id: str) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for ln in lines(agent, run_id) if ln.startswith("self ") and " ok " in ln)


def test_egress_reaches_the_outside_and_not_the_host_nor_another_run(make_agent, file_store, state_dir, inet):
    app = probe_app(state_dir)
    agent = make_agent(file_store)
    out_port, host_port, own_port = free_port(), free_port(), free_port()
    inet.serve(out_port, "inet")
    inet.serve(host_port, "host")
    assert socket.create_connection(("127.0.0.1", host_port), 2).recv(16) == b"host\n"  # it is there, on the host

    first = agent.start(run_id="run-b", args=[*PROBE, str(own_port)], app_dir=app, network="egress")
    assert_eventually(lambda: self_ok(agent, "run-b") > 0, timeout=30)
    first_host_end, first_addr = agent.mgr.network_of(first).addresses
    second = agent.start(run_id="run-a", app_dir=app, network="egress", args=[
        *PROBE, str(own_port),
        f"{inet.addr}:{out_port}",                                   # the outside
        f"{inet.host_addr}:{host_port}",                             # an address of the host
        f"127.0.0.1:{host_port}",                                    # "localhost": its own, not the host's
        f"{first_addr}:{own_port}",                                  # another run
        f"{first_host_end}:{host_port}",                             # the host end of a run's veth
    ])
    seen = probes(agent, "run-a")
    assert seen[f"{inet.addr}:{out_port}"] == "ok inet", seen
    assert not seen[f"{inet.host_addr}:{host_port}"].startswith("ok"), seen
    assert seen[f"127.0.0.1:{host_port}"] == "refused", seen
    assert not seen[f"{first_addr}:{own_port}"].startswith("ok"), seen
    assert not seen[f"{first_host_end}:{host_port}"].startswith("ok"), seen
    # Both serve the same port on their own loopback.
    n = self_ok(agent, "run-a")
    assert_eventually(lambda: self_ok(agent, "run-a") > n + 2 and self_ok(agent, "run-b") > 3, timeout=10)
    assert first.running and second.running


def test_none_reaches_nothing_but_its_own_loopback(make_agent, file_store, state_dir, inet):
    app = probe_app(state_dir)
    agent = make_agent(file_store)
    out_port, own_port = free_port(), free_port()
    inet.serve(out_port, "inet")
    agent.start(run_id="run-n", app_dir=app, network="none", args=[*PROBE, str(own_port), f"{inet.addr}:{out_port}"])
    seen = probes(agent, "run-n")
    assert seen[f"{inet.addr}:{out_port}"].startswith("unreachable"), seen
    assert_eventually(lambda: self_ok(agent, "run-n") > 2, timeout=10)


def test_host_network_is_refused_unless_the_agent_allows_it(make_agent, file_store, state_dir):
    agent = make_agent(file_store)
    with pytest.raises(ConfigError, match="--allow-host-network"):
        agent.start(run_id="run-h", args=[*PROBE, "1"], app_dir=probe_app(state_dir), network="host")
    assert agent.runc.list() == []
    assert agent.mgr.nets.held() == []


def test_two_runs_serving_one_port_both_serve_again_after_a_move_to_another_agent(make_agent, file_store, state_dir,
                                                                                  inet):
    app = probe_app(state_dir)
    a, b = make_agent(file_store, "a"), make_agent(file_store, "b")
    out_port, own_port = free_port(), free_port()
    inet.serve(out_port, "inet")
    c = a.start(run_id="run-m", app_dir=app, network="egress", args=[*PROBE, str(own_port), f"{inet.addr}:{out_port}"])
    c2 = a.start(run_id="run-m2", app_dir=app, network="none", args=[*PROBE, str(own_port)])
    assert probes(a, "run-m")[f"{inet.addr}:{out_port}"] == "ok inet"
    assert_eventually(lambda: self_ok(a, "run-m") > 2 and self_ok(a, "run-m2") > 2, timeout=10)
    old_net = a.mgr.network_of(c)
    manifest = a.mgr.checkpoint(c, checkpoint_id="ck-net", kind="suspend", leave_running=False)
    manifest2 = a.mgr.checkpoint(c2, checkpoint_id="ck-net2", kind="suspend", leave_running=False)
    c.wait(timeout=30)
    c2.wait(timeout=30)
    assert (manifest.network, manifest2.network) == ("egress", "none")
    assert not os.path.exists(f"/sys/class/net/{old_net.veth}"), "the suspended run's veth was left behind"

    # Another run now holds the index (and addresses) the dumped run had, and serves the same port.
    b.start(run_id="run-other", app_dir=app, network="egress", args=[*PROBE, str(own_port)])
    before = {run: self_ok(b, run) for run in ("run-m", "run-m2", "run-other")}
    r = b.restore(manifest, app_dir=app)
    r2 = b.restore(manifest2, app_dir=app)
    new_net = b.mgr.network_of(r)
    assert new_net.mode == "egress" and new_net.addresses != old_net.addresses
    assert b.mgr.network_of(r2).mode == "none"
    # The hook gave the restored namespace this host's addresses, not the ones of the dump.
    inside = subprocess.run(["nsenter", "-t", str(r.pid), "-n", "ip", "-o", "-4", "addr", "show", "eth0"],
                            capture_output=True, text=True, check=True).stdout
    assert f" {new_net.addresses[1]}/30 " in inside, inside
    # All three listen on the same port, each in its own namespace, and answer their own round trips.
    for run in ("run-m", "run-m2", "run-other"):
        try:
            assert_eventually(lambda: self_ok(b, run) > before[run] + 3, timeout=20)
        except AssertionError as exc:
            raise AssertionError(f"{run} does not serve after the move: {tail(b, run)}") from exc
    assert r.running and r2.running
