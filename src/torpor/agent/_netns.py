"""A network namespace per container: loopback only, or loopback plus NAT'd egress.

Modes (docs/security.md, "Network"):

``none``    the container's own namespace with its loopback up, nothing else.
``egress``  the same plus a veth pair: ``eth0`` inside with the run end of a /30
            from the agent's run network, the host end ``tpr<N>``; the host
            forwards and masquerades what the run sends out, and drops
            whatever a run sends to the host itself (INPUT) or to another run
            or a link-local address (FORWARD).
``host``    no namespace: the host's network.

runc makes the namespace, inside the container's user namespace: CRIU dumps
only namespaces that user namespace owns. A prestart hook (a shell script in
the bundle; runc runs it with the container's pid once its namespaces exist,
before the task starts — and, on a restore, when CRIU has made the namespaces
and before it restores the sockets) brings up loopback and moves the run end
of the veth in. CRIU runs with ``empty-ns net``: it dumps the task's sockets
but not the namespace's devices and addresses, so a restore on any host gets
the addresses of that host's own allocation, and listening sockets listen
again there.

Index allocation is host-wide, since several agents may share a host: index N
is held by an exclusive ``flock`` on ``/run/torpor/net/N.lock`` for as long as
the container lives. The kernel drops the lock when its holder dies, so an
index whose lock is free but whose veth still exists is a leftover of a dead
agent and is removed before the index is used again.

The firewall is shared by every agent of a host and set up idempotently on
first use: chains TORPOR-INPUT and TORPOR-FORWARD, jumped to from INPUT and
FORWARD, and one MASQUERADE rule in nat/POSTROUTING. They stay in place when
an agent stops (they match only ``tpr+`` interfaces and the run network).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from torpor._errors import ConfigError, ContainerError
from torpor.sdk._task import NETWORK_MODES

log = logging.getLogger(__name__)

MODES = NETWORK_MODES
DEFAULT_SUBNET = "10.213.0.0/16"
LOCK_DIR = Path("/run/torpor/net")
_VETH_PREFIX = "tpr"
_PEER_PREFIX = "tpc"
_IN_CHAIN = "TORPOR-INPUT"
_FWD_CHAIN = "TORPOR-FORWARD"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown network mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def _run(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, input=input_text, timeout=30)
    except FileNotFoundError as exc:
        raise ConfigError(f"{args[0]} not found: install the Debian packages 'iproute2' and 'iptables'") from exc
    return proc


def _must(*args: str, input_text: str | None = None) -> None:
    proc = _run(*args, input_text=input_text)
    if proc.returncode != 0:
        raise ContainerError(f"{' '.join(args[:4])} failed: {proc.stderr.strip() or proc.stdout.strip()}")


@dataclass
class RunNetwork:
    """One container's namespace, held until ``NetworkPool.release``."""

    mode: str
    index: int = -1
    lock_fd: int = -1
    addresses: tuple[str, str] = ("", "")
    """(host end, run end) for egress."""
    released: bool = field(default=False, repr=False)

    @property
    def isolated(self) -> bool:
        """Whether the container gets a namespace of its own (every mode but host)."""
        return self.mode != "host"

    @property
    def veth(self) -> str:
        return f"{_VETH_PREFIX}{self.index}"

    @property
    def peer(self) -> str:
        return f"{_PEER_PREFIX}{self.index}"

    def hook_script(self) -> str:
        """The prestart hook: runc gives it the container's state (with its pid) on stdin."""
        lines = [
            "#!/bin/sh",
            "# torpor: set up the run's network namespace (agent/_netns.py).",
            "set -e",
            "pid=$(tr -d '\\n' | sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p')",
            '[ -n "$pid" ] || { echo "torpor net hook: no pid in the container state" >&2; exit 1; }',
            'nsenter -t "$pid" -n ip link set lo up',
        ]
        if self.mode == "egress":
            host_end, run_end = self.addresses
            lines += [
                f'ip link set {self.peer} netns "$pid"',
                'nsenter -t "$pid" -n ip -batch - <<EOF',
                f"link set {self.peer} name eth0",
                f"addr add {run_end}/30 dev eth0",
                "link set eth0 up",
                f"route add default via {host_end}",
                "EOF",
            ]
        return "\n".join(lines) + "\n"


class NetworkPool:
    """The run network of one agent: makes and removes per-container namespaces."""

    def __init__(self, subnet: str = DEFAULT_SUBNET, *, lock_dir: Path = LOCK_DIR) -> None:
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise ConfigError(f"--run-network {subnet!r} is not an IPv4 network: {exc}") from exc
        if self.subnet.prefixlen > 24:
            raise ConfigError(f"--run-network {subnet} is too small: give at least a /24 (64 runs per host)")
        self.size = self.subnet.num_addresses // 4
        self.lock_dir = lock_dir
        self._firewall_ready = False

    # -- host set-up ---------------------------------------------------------------

    def _rules(self) -> dict[str, list[list[str]]]:
        net, veths = str(self.subnet), f"{_VETH_PREFIX}+"
        return {
            # Nothing a run sends may reach the host itself: its addresses, its loopback, the veth's own end.
            _IN_CHAIN: [["-j", "DROP"]],
            # Runs reach the outside; not each other, not link-local addresses (cloud metadata services).
            _FWD_CHAIN: [
                ["-d", net, "-i", veths, "-j", "DROP"],  # (in the order `iptables -S` prints them)
                ["-d", "169.254.0.0/16", "-i", veths, "-j", "DROP"],
                ["-i", veths, "-j", "ACCEPT"],
                ["-o", veths, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
                ["-o", veths, "-j", "DROP"],
            ],
        }

    def setup_host(self) -> None:
        """Forwarding on, the shared firewall in place. Idempotent, and a no-op when it is already right.

        Under a host-wide lock; the chains are rebuilt only when their rules differ from these (first
        start, or another --run-network), so agents starting beside running runs never open a gap.
        """
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_dir / "firewall.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for chain, rules in self._rules().items():
                want = [f"-A {chain} {' '.join(r)}" for r in rules]
                have = _run("iptables", "-w", "-S", chain)
                if have.returncode == 0 and have.stdout.splitlines()[1:] == want:
                    continue
                if have.returncode != 0:
                    _must("iptables", "-w", "-N", chain)
                _must("iptables", "-w", "-F", chain)
                for rule in rules:
                    _must("iptables", "-w", "-A", chain, *rule)
            net = str(self.subnet)
            for table, chain, rule in (
                ("filter", "INPUT", ["-i", f"{_VETH_PREFIX}+", "-j", _IN_CHAIN]),
                ("filter", "FORWARD", ["-j", _FWD_CHAIN]),
                ("nat", "POSTROUTING", ["-s", net, "!", "-d", net, "-j", "MASQUERADE"]),
            ):
                if _run("iptables", "-w", "-t", table, "-C", chain, *rule).returncode != 0:
                    _must("iptables", "-w", "-t", table, "-I", chain, "1", *rule)
        finally:
            os.close(fd)
        self._firewall_ready = True

    # -- per container -------------------------------------------------------------

    def create(self, mode: str) -> RunNetwork:
        """Claim an index and, for egress, make the veth pair (both ends on the host until the hook runs)."""
        check_mode(mode)
        if mode == "host":
            return RunNetwork(mode="host")
        if mode == "egress" and not self._firewall_ready:
            self.setup_host()
        net = self._claim(mode)
        try:
            self._remove_leftovers(net)
            if mode == "egress":
                base = self.subnet.network_address + 4 * net.index
                host_end, run_end = str(base + 1), str(base + 2)
                net.addresses = (host_end, run_end)
                _must("ip", "-batch", "-", input_text=(
                    f"link add {net.veth} type veth peer name {net.peer}\n"
                    f"addr add {host_end}/30 dev {net.veth}\nlink set {net.veth} up\n"))
        except BaseException:
            self.release(net)
            raise
        return net

    def release(self, net: RunNetwork) -> None:
        """Remove the veth, then free the index. Safe to call twice."""
        if net.released or net.mode == "host":
            return
        net.released = True
        try:
            self._remove_leftovers(net)
        finally:
            if net.lock_fd >= 0:
                os.close(net.lock_fd)  # drops the flock

    def _claim(self, mode: str) -> RunNetwork:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.size):
            fd = os.open(self.lock_dir / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            return RunNetwork(mode=mode, index=index, lock_fd=fd)
        raise ContainerError(f"the run network {self.subnet} has no free address: every one of its "
                             f"{self.size} slots is in use on this host; give the agents a larger --run-network")

    @staticmethod
    def _remove_leftovers(net: RunNetwork) -> None:
        """The host end (and the peer, if no hook moved it): the namespace itself ends with its container."""
        for name in (net.veth, net.peer):
            if Path("/sys/class/net", name).exists():
                proc = _run("ip", "link", "del", name)
                if proc.returncode != 0 and Path("/sys/class/net", name).exists():
                    log.warning("could not remove %s: %s", name, proc.stderr.strip())
