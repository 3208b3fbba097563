"""Pod networking: a network namespace per pod with `eth0` on the lab bridge, and
sockets opened inside a pod's (or node's) network namespace for probes.

A pod's namespace is `kh-<id>-<node>-pod-<last octet>`; its `eth0` is one end of a
veth pair whose other end (`kh<id>n<node index>p<last octet>`) is a port of the
bridge `khbr0` in the LAN namespace. The pod's address is in its node's podCIDR with
the cluster prefix (/16) and an on-link default route, as every namespace of the lab
has (docs/lab.md), so pods, nodes and the control-plane endpoint share one flat L2
segment. Deleting the namespace destroys the veth pair with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubehoist.lab.kubelet import linux
from kubehoist.lab.kubelet.ipam import (
    pod_netns_name,
    pod_netns_prefix,
    pod_veth_name,
    pod_veth_prefix,
)
from kubehoist.lab.spec import CLUSTER_CIDR, LabNode, LabSpec

NETNS_DIR = Path("/run/netns")


class NetworkError(Exception):
    pass


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


async def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


async def setup_pod_network(spec: LabSpec, node: LabNode, ip: str) -> str:
    """Create the pod's namespace and wire it to the bridge; return the namespace path."""
    ns = pod_netns_name(spec.lab_id, node.name, ip)
    veth = pod_veth_name(spec.lab_id, node.index, ip)
    if os.path.exists(netns_path(ns)):  # a leftover of an earlier run
        await _ip("netns", "delete", ns, check=False)
    await _ip("netns", "add", ns)
    try:
        await _ip(
            "-n",
            spec.lan_netns,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        await _ip("-n", spec.lan_netns, "link", "set", veth, "master", spec.bridge, "up")
        await _ip(
            "-n",
            ns,
            "-batch",
            "-",
            stdin="\n".join(
                [
                    f"addr add {ip}/{CLUSTER_CIDR.prefixlen} dev eth0",
                    "link set lo up",
                    "link set eth0 up",
                    "route add default dev eth0",
                ]
            )
            + "\n",
        )
    except BaseException:
        await _ip("netns", "delete", ns, check=False)
        raise
    return netns_path(ns)


async def teardown_pod_network(spec: LabSpec, node: LabNode, ip: str) -> None:
    ns = pod_netns_name(spec.lab_id, node.name, ip)
    if os.path.exists(netns_path(ns)):
        await _ip("netns", "delete", ns, check=False)
    veth = pod_veth_name(spec.lab_id, node.index, ip)
    if os.path.exists(netns_path(spec.lan_netns)):
        await _ip("-n", spec.lan_netns, "link", "delete", veth, check=False)


def leftover_netns(spec: LabSpec, node: LabNode) -> list[str]:
    prefix = pod_netns_prefix(spec.lab_id, node.name)
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


async def leftover_veths(spec: LabSpec, node: LabNode) -> list[str]:
    if not os.path.exists(netns_path(spec.lan_netns)):
        return []
    out = await _ip("-n", spec.lan_netns, "-o", "link", "show", check=False)
    prefix = pod_veth_prefix(spec.lab_id, node.index)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


async def remove_leftovers(spec: LabSpec, node: LabNode) -> list[str]:
    """Delete every pod namespace and pod veth of this node; return what was removed."""
    removed = []
    for ns in leftover_netns(spec, node):
        await _ip("netns", "delete", ns, check=False)
        removed.append(f"netns {ns}")
    for veth in await leftover_veths(spec, node):
        await _ip("-n", spec.lan_netns, "link", "delete", veth, check=False)
        removed.append(f"veth {veth}")
    return removed


# --- sockets inside a namespace ---------------------------------------------------------

# setns() changes the namespace of the calling thread only; one dedicated thread
# switches in, opens a socket (which keeps its namespace for life) and switches back.
_netns_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kh-netns")


def _socket_in(path: str) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            linux.setns(target, linux.CLONE_NEWNET)
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                linux.setns(own, linux.CLONE_NEWNET)
        finally:
            os.close(target)
    finally:
        os.close(own)


async def connect_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A TCP socket connected to host:port from inside the namespace at `netns`."""
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(_netns_thread, _socket_in, netns)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
