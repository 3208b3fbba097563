"""The lab's network: the LAN namespace with its bridge, one namespace per node, and
sockets opened inside a namespace.

Everything here is done with iproute2 (`ip`), which the lab needs anyway, and with
setns(2) for sockets. The host's own network namespace is never changed.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from pathlib import Path

from kubehoist.errors import KubehoistError
from kubehoist.lab.spec import API_PORT, LAN_SUBNET, SERVICE_CIDR, LabNode, LabSpec

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip"]
    if netns is not None:
        cmd += ["-n", netns]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise KubehoistError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def lab_namespaces(spec: LabSpec) -> list[str]:
    """Every namespace that belongs to this lab, including pods' (same prefix)."""
    prefix = f"kh-{spec.lab_id}-"
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def _add_netns(name: str) -> None:
    if exists(name):
        _ip("netns", "delete", name, check=False)
    _ip("netns", "add", name)
    _ip("link", "set", "lo", "up", netns=name)


BRIDGE_MAC = "02:6b:68:00:00:01"
"""Locally administered; each lab's LAN is a namespace of its own."""


def create_lan(spec: LabSpec) -> None:
    """The LAN namespace: a bridge carrying the node subnet, the control-plane endpoint
    and a route to each node's pod network (as a router of a real network would)."""
    ns = spec.lan_netns
    _add_netns(ns)
    # A fixed MAC: a Linux bridge without one takes the lowest MAC of its ports, so it
    # changed whenever a port came or went; every node's ARP entry for the gateway
    # (the API endpoint) then pointed nowhere until it went stale.
    _ip("link", "add", spec.bridge, "address", BRIDGE_MAC, "type", "bridge", netns=ns)
    _ip("addr", "add", f"{spec.lan_gateway}/{LAN_SUBNET.prefixlen}", "dev", spec.bridge, netns=ns)
    _ip("link", "set", spec.bridge, "up", netns=ns)
    _ip("route", "add", "unreachable", "default", netns=ns)
    _sysctl(ns, "net/ipv4/ip_forward", "1")


def attach(spec: LabSpec, *, netns: str, lan_end: str, address: str, prefixlen: int) -> None:
    """Connect namespace `netns` to the LAN bridge with a veth pair: `eth0` inside it
    (with `address`, an on-link default route) and `lan_end` on the bridge."""
    _ip(
        "link", "add", lan_end, "netns", spec.lan_netns,
        "type", "veth", "peer", "name", "eth0", "netns", netns,
    )  # fmt: skip
    _ip("link", "set", lan_end, "master", spec.bridge, "up", netns=spec.lan_netns)
    _ip("addr", "add", f"{address}/{prefixlen}", "dev", "eth0", netns=netns)
    _ip("link", "set", "eth0", "up", netns=netns)
    _ip("route", "add", "default", "dev", "eth0", netns=netns)


def create_node(spec: LabSpec, node: LabNode) -> None:
    _add_netns(node.netns)
    attach(spec, netns=node.netns, lan_end=node.veth, address=node.ip, prefixlen=24)
    # The node's default gateway is the LAN's router, which knows no way out: anything
    # beyond the lab (a registry, a DNS server) fails at once with "network unreachable"
    # instead of waiting for ARP to time out — an image pull that cannot succeed fails
    # fast, as on an air-gapped network.
    _ip("route", "replace", "default", "via", spec.lan_gateway, "dev", "eth0", netns=node.netns)


KUBERNETES_SERVICE_IP = str(SERVICE_CIDR.network_address + 1)


def route_pod_networks(spec: LabSpec) -> None:
    """Pod addresses are routable between nodes: each node forwards, and knows every
    other node's podCIDR through that node's address (static routes, as a host-gw pod
    network does). The LAN namespace (the control-plane endpoint) knows them all.

    There is no kube-proxy in the lab: the one Service pods use, `kubernetes`
    (10.96.0.1:443), is a DNAT rule on each node to the control-plane endpoint."""
    for node in spec.nodes:
        _sysctl(node.netns, "net/ipv4/ip_forward", "1")
        for other in spec.nodes:
            if other is not node:
                _ip("route", "replace", other.pod_cidr, "via", other.ip, netns=node.netns)
        for chain in ("PREROUTING", "OUTPUT"):
            _iptables(
                node.netns,
                "-t", "nat", "-A", chain, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp",
                "--dport", "443", "-j", "DNAT",
                "--to-destination", f"{spec.lan_gateway}:{API_PORT}",
            )  # fmt: skip
    for node in spec.nodes:
        _ip("route", "replace", node.pod_cidr, "via", node.ip, netns=spec.lan_netns)


def _sysctl(netns: str, key: str, value: str) -> None:
    proc = subprocess.run(
        ["nsenter", f"--net={NETNS_DIR / netns}", "--", "sh", "-c",
         f"echo {value} > /proc/sys/{key}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise KubehoistError(f"sysctl {key}={value} in {netns}: {proc.stderr.strip()}")


def _iptables(netns: str, *args: str) -> None:
    cmd = ["nsenter", f"--net={NETNS_DIR / netns}", "--", "iptables", "-w", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KubehoistError(f"`iptables {' '.join(args)}` in {netns}: {proc.stderr.strip()}")


def teardown(spec: LabSpec) -> list[str]:
    """Delete every namespace of the lab (their veths go with them); return their names."""
    names = lab_namespaces(spec)
    for name in names:
        _ip("netns", "delete", name, check=False)
    return names


def socket_in(netns: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket that lives in namespace `netns` (None: the caller's own).

    setns(2) moves only the calling thread, so the socket is made on a short-lived
    thread and the caller's thread never changes namespace.
    """
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    result: list[socket.socket] = []
    error: list[BaseException] = []

    def _make() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=_make, name=f"netns-{netns}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
