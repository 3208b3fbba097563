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
from kubehoist.lab.spec import CLUSTER_CIDR, LAN_SUBNET, LabNode, LabSpec

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
    """The LAN namespace: a bridge carrying the node subnet and the pod network."""
    ns = spec.lan_netns
    _add_netns(ns)
    # A fixed MAC: a Linux bridge without one takes the lowest MAC of its ports, so it
    # changed whenever a pod's veth came or went; every node's ARP entry for the gateway
    # (the API endpoint) then pointed nowhere until it went stale — outages of 10-30 s
    # for every connection through 172.29.0.1 in the middle of a test.
    _ip("link", "add", spec.bridge, "address", BRIDGE_MAC, "type", "bridge", netns=ns)
    _ip("addr", "add", f"{spec.lan_gateway}/{LAN_SUBNET.prefixlen}", "dev", spec.bridge, netns=ns)
    _ip(
        "addr",
        "add",
        f"{CLUSTER_CIDR.network_address + 1}/{CLUSTER_CIDR.prefixlen}",
        "dev",
        spec.bridge,
        netns=ns,
    )
    _ip("link", "set", spec.bridge, "up", netns=ns)


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
