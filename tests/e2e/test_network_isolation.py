"""A task deployed like any other cannot reach the dev stack's services, the host, or another run.

Through a real `torpor dev` stack: its Postgres, its coordinator, a server the
test starts on every address of the host. (The agent layer's tests/integration/agent/test_netns.py
covers egress to the outside, `none`, ports shared between runs and restore on another host.)
"""

from __future__ import annotations

import socket
import subprocess
import sys

from e2e_support import trigger, wait_status
from helpers import assert_eventually, free_port


def _host_address() -> str:
    """An address of this host that is not loopback (the one its default route leaves from)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if not line.split()[1].startswith("tpr"):
            return addr
    return ""


def test_a_task_reaches_no_service_of_the_host(stack):
    pg_port = int((stack.dir / "postgres.port").read_text())
    coord_port = int(stack.env["TORPOR_ADDRESS"].rsplit(":", 1)[1])
    host_port = free_port()
    server = subprocess.Popen([sys.executable, "-c",
                               "import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                               f"s.bind(('0.0.0.0', {host_port})); s.listen(); time.sleep(600)"])
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", host_port), 1).close()
                return True
            except OSError:
                return False
        assert_eventually(up, timeout=10)
        targets = [f"127.0.0.1:{pg_port}", f"127.0.0.1:{coord_port}", f"127.0.0.1:{host_port}"]
        address = _host_address()
        if address:
            targets += [f"{address}:{host_port}", f"{address}:{pg_port}"]
        run = wait_status(stack, trigger(stack, "net-probe", {"targets": targets}), {"COMPLETED", "FAILED"})
        assert run["status"] == "COMPLETED", run
        seen = run["output"]
        # On its own loopback nothing listens; the host's addresses do not answer at all.
        assert all(seen[t] == "refused" for t in targets if t.startswith("127.0.0.1:")), seen
        assert all(seen[t] not in ("connected", "refused") for t in targets if not t.startswith("127.0.0.1:")), seen
    finally:
        server.kill()
        server.wait()


def test_a_task_asking_for_the_host_network_waits_with_the_fix_named(stack):
    # The dev stack's agent does not allow the host network: the coordinator places the run nowhere and
    # says why, in `runs show` and its --json, rather than sending it to an agent that would refuse it.
    run_id = trigger(stack, "host-net", {})

    def unplaced() -> str:
        run = stack.cli_json("runs", "show", run_id)
        assert run["status"] == "QUEUED", run
        assert run["unplaced"] and "--allow-host-network" in run["unplaced"], run
        return run["unplaced"]

    reason = assert_eventually(unplaced, timeout=30)
    shown = stack.cli("runs", "show", run_id).stdout
    assert f"unplaced {reason}" in shown, shown
    stack.cli("runs", "cancel", run_id)
    assert wait_status(stack, run_id, {"CANCELED"}, timeout=30)["unplaced"] is None
