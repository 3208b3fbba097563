"""Pivot's preflight and a kubelet that is making its mirror pods again: a control
plane whose mirror pod is missing for a moment (a kubelet just restarted by `kubeadm
upgrade node`) is waited for within MIRROR_WAIT_S; one that stays missing is refused,
naming the node and the mirror pod."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kubehoist.components import KUBE_CONTROLLER_MANAGER
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases
from kubehoist.pivot import phases


def _ctx(timeout: float = 60.0) -> Any:
    return SimpleNamespace(
        client=object(),
        component=KUBE_CONTROLLER_MANAGER,
        lease_name="kube-controller-manager",
        lease_namespace="kube-system",
        state=SimpleNamespace(parked={}),
        timeout=timeout,
        nodes=(),
        warnings=[],
        pod=None,
        rendered=None,
    )


def _mirror(name: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="kube-system"),
        spec=PodSpec(containers=[Container(name="kube-controller-manager", image="k:v1")]),
    )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """cp-2's mirror pod is absent for its first `absent` reads; sleeps are instant."""
    state = {"absent": 3, "reads": 0}

    def mirror_pod(client: object, component: str, node: str) -> Pod | None:
        if node == "cp-2":
            state["reads"] += 1
            if state["reads"] <= state["absent"]:
                return None
        return _mirror(f"{component}-{node}")

    clock = {"t": 0.0}
    monkeypatch.setattr(phases, "mirror_pod", mirror_pod)
    monkeypatch.setattr(phases, "control_plane_nodes", lambda client: ["cp-1", "cp-2"])
    monkeypatch.setattr(leases, "read_lease", lambda client, **kw: SimpleNamespace(holder="cp-1_x"))
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    return state


def test_a_mirror_pod_missing_for_a_moment_is_waited_for(reads: dict[str, int]) -> None:
    ctx = _ctx()
    phases._preflight_checks(ctx)
    assert ctx.nodes == ("cp-1", "cp-2")
    assert reads["reads"] == reads["absent"] + 1


def test_a_mirror_pod_that_stays_missing_is_refused_after_the_wait(
    reads: dict[str, int],
) -> None:
    reads["absent"] = 10**6
    with pytest.raises(KubehoistError, match=r"cp-2 \(mirror pods kube-controller-manager-cp-2"):
        phases._preflight_checks(_ctx())
    # every second of the wait, and no longer
    assert reads["reads"] == 1 + int(phases.MIRROR_WAIT_S)


def test_the_wait_is_bounded_by_the_runs_timeout(reads: dict[str, int]) -> None:
    reads["absent"] = 10**6
    with pytest.raises(KubehoistError):
        phases._preflight_checks(_ctx(timeout=5))
    assert reads["reads"] == 1 + 5
