"""A lab of the older supported version, v1.35.4: its API server, kubelets and static
pods say v1.35.4; pivot refuses the release gate it does not have; pivot and rollback
work on it. The lab has a root and port of its own (beside the session lab)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lightkube.resources.core_v1 import Node, Pod

from kubehoist import kubeversion
from tests.e2e.conftest import LabHandle, host_port, kubehoist, lab_root, node_files, start_lab
from tests.e2e.test_pivot import COMPONENT, holder, static_leads, wait_for

pytestmark = pytest.mark.lab

VERSION = "v1.35.4"


@pytest.fixture(scope="module")
def lab135() -> Iterator[LabHandle]:
    root = lab_root().with_name(lab_root().name + "-v1.35")
    # Built only here, where a test needs it: a cold build takes longer than `lab up`'s
    # share of the default timeout.
    kubehoist("lab", "build", "--kubernetes-version", VERSION, timeout=3600)
    handle = start_lab(root, host_port() + 20, workers=1, kubernetes_version=VERSION)
    try:
        yield handle
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(handle.spec.root), check=False)


def pivot_args(lab: LabHandle, *extra: str) -> list[str]:
    return [
        "pivot", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(lab.spec.api_node.root(lab.spec.root)),
        "--retry-period", "500ms", "--timeout", "180", *extra,
    ]  # fmt: skip


def test_every_component_says_v1_35_4(lab135: LabHandle) -> None:
    assert lab135.spec.kubernetes_version == VERSION
    version = json.loads(lab135.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == VERSION
    assert version["clientVersion"]["gitVersion"] == VERSION
    nodes = list(lab135.client.list(Node))
    assert len(nodes) == 2
    for node in nodes:
        assert node.status is not None and node.status.nodeInfo is not None
        assert node.status.nodeInfo.kubeletVersion == VERSION
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        pod = lab135.client.get(Pod, f"{component}-cp-1", namespace="kube-system")
        assert pod.spec is not None
        image = pod.spec.containers[0].image or ""
        assert kubeversion.image_tag(image) == VERSION, image


def test_the_release_gate_is_refused_and_nothing_changes(lab135: LabHandle) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab135), 180)
    before = node_files(lab135.spec)
    out = kubehoist(*pivot_args(lab135, "--release-lease-on-exit"), check=False)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line == (
        f"error: --release-lease-on-exit: kube-controller-manager {VERSION} (image "
        f"registry.k8s.io/kube-controller-manager:{VERSION}) has no feature gate "
        "ControllerManagerReleaseLeaderElectionLockOnExit (alpha from v1.36): it keeps its "
        "Lease on SIGTERM"
    )
    assert node_files(lab135.spec) == before
    left = lab135.kubectl(
        "get", "deployments,secrets,configmaps,pdb", "-n", "kube-system",
        "-l", "app.kubernetes.io/managed-by=kubehoist", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""


def test_pivot_and_rollback_on_v1_35(lab135: LabHandle) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab135), 180)
    before = node_files(lab135.spec)
    out = kubehoist(*pivot_args(lab135))
    assert "[7/7] verify:" in out.stderr, out.stderr
    assert f"{COMPONENT} {VERSION} keeps its Lease on SIGTERM" in out.stderr
    assert holder(lab135).startswith(f"{COMPONENT}-"), holder(lab135)
    pods = lab135.client.list(
        Pod, namespace="kube-system", labels={"app.kubernetes.io/name": COMPONENT}
    )
    images = {p.spec.containers[0].image for p in pods if p.spec}
    assert images == {f"registry.k8s.io/kube-controller-manager:{VERSION}"}
    out = kubehoist("rollback", "--kubeconfig", str(lab135.kubeconfig), "--timeout", "180")
    assert "runs from its static pods again" in out.stderr, out.stderr
    assert static_leads(lab135)
    assert node_files(lab135.spec) == before
