"""The harness's private network: one bridge, and one network namespace per "host".

Each host is a namespace joined to the bridge by a veth pair and given an
address in a /24 the harness picks from 10.213.0.0/16 (one not used on this
machine). The bridge's own address (.1) is where the coordinators and MinIO
listen. There is no default route in a namespace, so a host reaches nothing
but the bridge's end and the other hosts: Postgres on the host's loopback is
out of its reach, as it would be on a real agent host.

A partition drops every packet on the namespace's veth (iptables inside the
namespace, so the host's own rules are never touched); healing deletes those
rules. Everything is removed by name at the end: the namespaces (their veths
and rules go with them) and the bridge.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
INNER_IF = "fx0"  # the namespace's end of its veth, renamed once inside
DROP_RULES = (("INPUT", "-i"), ("OUTPUT", "-o"))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net={NETNS_DIR}/{ns}", "--", *args, check=check)


def ns_prefix(ns: str) -> list[str]:
    """Command prefix that runs a program in namespace ``ns``, network only.

    Not ``ip netns exec``: that also remounts /sys for the namespace, which
    hides /sys/fs/cgroup from the agent and runc.
    """
    return ["nsenter", f"--net={NETNS_DIR}/{ns}", "--"]


def _free_subnet() -> ipaddress.IPv4Network:
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout + sh("ip", "-4", "addr").stdout
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.213.{secrets.randbelow(250) + 2}.0/24")
        if f"10.213.{net.network_address.packed[2]}." not in routes:
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the fault harness")


@dataclass
class Host:
    """One namespace on the bridge: where an agent (and its ledger listener) runs."""

    name: str
    ns: str
    veth: str
    ip: str
    outer: str = ""
    """The veth's end on the bridge, in the machine's namespace."""
    partitioned: bool = False

    @property
    def prefix(self) -> list[str]:
        return ns_prefix(self.ns)


@dataclass
class Network:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    bridge: str = ""
    created: bool = False

    @property
    def gateway(self) -> str:
        """The bridge's (the host machine's) address: coordinators and MinIO listen here."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def create(self) -> None:
        self.subnet = _free_subnet()
        self.bridge = f"tfb{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.created = True
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        log.info("fault network %s on bridge %s", self.subnet, self.bridge)

    def add_host(self, name: str) -> Host:
        assert self.subnet is not None
        index = len(self.hosts)
        ns = f"tf{self.tag}-{name}"
        outer, peer = f"tfv{self.tag}{index}", f"tfp{self.tag}{index}"
        ip = str(self.subnet.network_address + 10 + index)
        host = Host(name=name, ns=ns, veth=INNER_IF, ip=ip, outer=outer)
        sh("ip", "netns", "add", ns)
        self.hosts[name] = host  # from here on, close() removes it
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "link", "set", outer, "master", self.bridge, "up")
        in_ns(ns, "ip", "link", "set", peer, "name", INNER_IF)
        in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", INNER_IF)
        in_ns(ns, "ip", "link", "set", INNER_IF, "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")
        return host

    # -- faults -------------------------------------------------------------------

    def partition(self, host: Host) -> None:
        """Drop every packet in and out of the host's veth: its TCP connections hang, as on a cut cable."""
        for chain, flag in DROP_RULES:
            in_ns(host.ns, "iptables", "-I", chain, flag, host.veth, "-j", "DROP")
        host.partitioned = True

    def heal(self, host: Host) -> None:
        for chain, flag in DROP_RULES:
            in_ns(host.ns, "iptables", "-D", chain, flag, host.veth, "-j", "DROP", check=False)
        host.partitioned = False

    def link_down(self, host: Host) -> None:
        """The other kind of partition: the link goes away and sends fail at once."""
        in_ns(host.ns, "ip", "link", "set", host.veth, "down")
        host.partitioned = True

    def link_up(self, host: Host) -> None:
        in_ns(host.ns, "ip", "link", "set", host.veth, "up")
        host.partitioned = False

    # -- clean-up -----------------------------------------------------------------

    def close(self) -> None:
        """Delete the veths (both ends at once), the namespaces (their rules go with them), then the bridge.

        The veth is deleted by name first: the kernel would delete it with its namespace, but later, in the
        background.
        """
        for host in list(self.hosts.values()):
            sh("ip", "link", "del", host.outer, check=False)
            sh("ip", "netns", "del", host.ns, check=False)
            del self.hosts[host.name]
        if self.created:
            sh("ip", "link", "del", self.bridge, check=False)
            self.created = False

    def leftovers(self) -> list[str]:
        """Names of this network's links or namespaces that still exist (empty after close())."""
        links = sh("ip", "-o", "link").stdout
        namespaces = sh("ip", "netns", "list").stdout
        return [w for w in (self.bridge, f"tfv{self.tag}", f"tf{self.tag}-") if w and (w in links or w in namespaces)]
