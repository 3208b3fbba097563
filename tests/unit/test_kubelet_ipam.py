"""IPAM of the lab kubelet: round-robin allocation inside a node's podCIDR."""

from __future__ import annotations

import pytest

from kubehoist.lab.kubelet.ipam import (
    Ipam,
    IpamExhausted,
    pod_netns_name,
    pod_veth_name,
)


def test_allocates_from_dot_two_and_is_stable_per_owner() -> None:
    ipam = Ipam("10.244.1.0/24")
    assert ipam.allocate("a") == "10.244.1.2"
    assert ipam.allocate("b") == "10.244.1.3"
    assert ipam.allocate("a") == "10.244.1.2"


def test_released_address_is_not_reused_at_once() -> None:
    ipam = Ipam("10.244.1.0/24")
    ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") == "10.244.1.3"


def test_wraps_around_and_exhausts() -> None:
    ipam = Ipam("10.244.1.0/29")  # .2 .. .6
    got = [ipam.allocate(str(i)) for i in range(5)]
    assert got == [f"10.244.1.{i}" for i in range(2, 7)]
    with pytest.raises(IpamExhausted):
        ipam.allocate("x")
    ipam.release("0")
    assert ipam.allocate("x") == "10.244.1.2"


def test_reserve_outside_the_cidr_is_refused() -> None:
    with pytest.raises(ValueError):
        Ipam("10.244.1.0/24").reserve("10.244.2.5", "a")


def test_names_fit_the_kernel_limits() -> None:
    assert pod_netns_name("ab12", "worker-1", "10.244.2.17") == "kh-ab12-worker-1-pod-17"
    assert pod_veth_name("ab12", 12, "10.244.12.254") == "khab12n12p254"
    assert len(pod_veth_name("ffff", 99, "10.244.99.254")) <= 15
