"""Pod IP addresses from a node's podCIDR (host-local style), and the names of a pod's
network namespace and veth derived from its address. Pure.

Addresses are handed out round-robin (the next free one after the last handed out,
as the CNI host-local plugin does), so an address just released is not reused at once
and a stale ARP entry or connection cannot reach the wrong pod.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


class IpamExhausted(Exception):
    """No free address is left in the node's podCIDR."""


@dataclass
class Ipam:
    """Allocations of one node's podCIDR; `.0`, `.1` and the broadcast are never used."""

    cidr: str
    _owners: dict[str, str] = field(default_factory=dict)  # ip -> owner key
    _last: int = 1

    def __post_init__(self) -> None:
        self._net = ipaddress.IPv4Network(self.cidr)
        if self._net.num_addresses < 4:
            raise ValueError(f"podCIDR {self.cidr} is too small")

    @property
    def _first(self) -> int:
        return 2

    @property
    def _count(self) -> int:
        return self._net.num_addresses - 3  # .0, .1 and broadcast

    def allocate(self, owner: str) -> str:
        """An address for `owner` (the same one again if it already has one)."""
        for ip, who in self._owners.items():
            if who == owner:
                return ip
        for step in range(self._count):
            offset = (self._last - self._first + 1 + step) % self._count + self._first
            ip = str(self._net.network_address + offset)
            if ip not in self._owners:
                self._owners[ip] = owner
                self._last = offset
                return ip
        raise IpamExhausted(f"no free address left in podCIDR {self.cidr}")

    def reserve(self, ip: str, owner: str) -> None:
        """Record an address found in use (e.g. after a restart)."""
        if ipaddress.IPv4Address(ip) not in self._net:
            raise ValueError(f"{ip} is not in {self.cidr}")
        self._owners[ip] = owner

    def release(self, owner: str) -> None:
        for ip, who in list(self._owners.items()):
            if who == owner:
                del self._owners[ip]

    def owner_of(self, ip: str) -> str | None:
        return self._owners.get(ip)

    @property
    def allocated(self) -> dict[str, str]:
        return dict(self._owners)

    @property
    def prefix_len(self) -> int:
        """The prefix of the lab's flat pod network (the whole cluster CIDR, /16)."""
        return 16


def host_octets(ip: str) -> str:
    """`10.244.3.17` -> `3x17`: unique per pod address within the cluster CIDR."""
    parts = ip.split(".")
    return f"{parts[2]}x{parts[3]}"


def pod_netns_prefix(lab_id: str, node_name: str) -> str:
    return f"kh-{lab_id}-{node_name}-pod-"


def pod_netns_name(lab_id: str, node_name: str, ip: str) -> str:
    return pod_netns_prefix(lab_id, node_name) + ip.split(".")[3]


def pod_veth_prefix(lab_id: str, node_index: int) -> str:
    return f"kh{lab_id}n{node_index}p"


def pod_veth_name(lab_id: str, node_index: int, ip: str) -> str:
    """The pod's veth end on the LAN bridge; at most 15 characters."""
    name = pod_veth_prefix(lab_id, node_index) + ip.split(".")[3]
    if len(name) > 15:
        raise ValueError(f"veth name {name!r} is longer than 15 characters")
    return name
