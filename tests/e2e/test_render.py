"""render in the lab: the rendered Deployment's replicas become Ready standbys.

Rendered from the lab's kubeadm manifest (and from the live mirror pod), applied with
`kubectl apply --server-side`, and removed again at the end of each test, so the
session lab is left as found: the static pod leads.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.constants import SOURCE_SHA256_ANNOTATION
from kubehoist.election import node_of_host
from tests.e2e.conftest import LabHandle, kubehoist

pytestmark = pytest.mark.lab

COMPONENT = "kube-controller-manager"
SELECTOR: dict[str, Any] = {
    "app.kubernetes.io/managed-by": "kubehoist",
    "app.kubernetes.io/name": COMPONENT,
}
STANDBY_LOG = "Attempting to acquire leader lease"


def node_root(lab: LabHandle) -> Path:
    return lab.spec.api_node.root(lab.spec.root)


def manifest(lab: LabHandle) -> Path:
    return node_root(lab) / "etc/kubernetes/manifests" / f"{COMPONENT}.yaml"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def holder(lab: LabHandle) -> str:
    try:
        lease = lab.client.get(Lease, COMPONENT, namespace="kube-system")
    except ApiError:
        return ""
    return (lease.spec.holderIdentity if lease.spec else None) or ""


def static_leads(lab: LabHandle) -> bool:
    host = holder(lab).rpartition("_")[0]
    return node_of_host(host, [n.name for n in lab.spec.control_planes]) is not None


def rendered_pods(lab: LabHandle) -> list[Pod]:
    return [
        p
        for p in lab.client.list(Pod, namespace="kube-system", labels=dict(SELECTOR))
        if p.metadata is not None and p.metadata.deletionTimestamp is None
    ]


def ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def remove_rendered(lab: LabHandle) -> None:
    """Delete what a render applied and wait until its pods are gone."""
    lab.kubectl(
        "delete", "-n", "kube-system", "--ignore-not-found", "--wait=true",
        f"deployment/{COMPONENT}", f"poddisruptionbudget/{COMPONENT}",
        f"secret/{COMPONENT}-credentials",
    )  # fmt: skip
    wait_for("the rendered pods to be gone", lambda: not rendered_pods(lab))


@pytest.fixture
def clean_lab(lab: LabHandle) -> Iterator[LabHandle]:
    wait_for("the static pod to lead", lambda: static_leads(lab))
    remove_rendered(lab)
    try:
        yield lab
    finally:
        remove_rendered(lab)
        wait_for("the static pod to lead", lambda: static_leads(lab))


def assert_ready_standbys(lab: LabHandle, replicas: int = 2) -> None:
    """`replicas` rendered pods Ready, waiting on the Lease the static pod keeps."""
    leader = holder(lab)
    assert leader.startswith(f"{lab.spec.api_node.name}_"), leader

    def all_ready() -> bool:
        pods = rendered_pods(lab)
        return len(pods) == replicas and all(ready(p) for p in pods)

    wait_for(f"{replicas} Ready rendered pods", all_ready, timeout=180)
    for pod in rendered_pods(lab):
        assert pod.metadata is not None and pod.metadata.name is not None
        assert pod.spec is not None and not pod.spec.hostNetwork
        name = pod.metadata.name

        def waits_on_lease(name: str = name) -> bool:
            logs = lab.kubectl("logs", "-n", "kube-system", name, check=False)
            return STANDBY_LOG in logs.stdout

        wait_for(f"{name} to wait on the lease", waits_on_lease, timeout=30)
    time.sleep(3)  # several retry periods of 500ms: the standbys must not take over
    # (the static controller manager may have restarted meanwhile on a loaded machine —
    # a new identity of the same static pod — but no rendered pod may lead)
    assert holder(lab).startswith(f"{lab.spec.api_node.name}_"), (holder(lab), leader)
    assert all(ready(p) for p in rendered_pods(lab))


def render(lab: LabHandle, *args: str) -> str:
    proc = kubehoist(
        "render", "-f", str(manifest(lab)), "--host-root", str(node_root(lab)),
        "--retry-period", "500ms", *args,
    )  # fmt: skip
    return proc.stdout


def test_rendered_deployment_runs_ready_standbys(clean_lab: LabHandle) -> None:
    lab = clean_lab
    text = render(lab)
    objects = docs(text)
    assert [o["kind"] for o in objects] == ["Secret", "Deployment", "PodDisruptionBudget"]
    secret = objects[0]
    # Exactly what the flags name (the kubeconfig embeds its certificates), ca.key
    # included because kubeadm sets --cluster-signing-key-file.
    assert sorted(secret["data"]) == [
        "ca.crt", "ca.key", "controller-manager.conf", "front-proxy-ca.crt", "sa.key",
    ]  # fmt: skip
    pki = node_root(lab) / "etc/kubernetes/pki"
    for key in ("ca.crt", "ca.key", "front-proxy-ca.crt", "sa.key"):
        assert base64.b64decode(secret["data"][key]) == (pki / key).read_bytes(), key

    drop = ("--drop-flag", "--cluster-signing-key-file", "--drop-flag")
    without_signing = docs(render(lab, *drop, "--cluster-signing-cert-file"))
    assert "ca.key" not in without_signing[0]["data"]
    assert "ca.crt" in without_signing[0]["data"]  # --root-ca-file, --client-ca-file

    lab.kubectl("apply", "--server-side", "-f", "-", input=text)
    assert_ready_standbys(lab)


def test_image_mode_runs_ready_standbys(clean_lab: LabHandle, tmp_path: Path) -> None:
    lab = clean_lab
    name = "lab.local/kubehoist-e2e/kcm-baked:v1"
    out = tmp_path / "out"
    proc = kubehoist(
        "render", "-f", str(manifest(lab)), "--host-root", str(node_root(lab)),
        "--retry-period", "500ms", "--credentials", "image", "--image", name,
        "--output-dir", str(out),
    )  # fmt: skip
    assert "IMAGE MODE" in proc.stderr
    credentials = out / "image" / "credentials"
    assert sorted(p.name for p in credentials.iterdir()) == [
        "ca.crt", "ca.key", "controller-manager.conf", "front-proxy-ca.crt", "sa.key",
    ]  # fmt: skip
    objects = [doc for path in sorted(out.glob("*.yaml")) for doc in docs(path.read_text())]
    assert [o["kind"] for o in objects] == ["Deployment", "PodDisruptionBudget"]
    assert objects[0]["spec"]["template"]["spec"]["containers"][0]["image"] == name
    lab.kubehoist("lab", "image", "build", "-t", name, str(out / "image"))
    lab.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    assert_ready_standbys(lab)


def without_source(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objects:
        obj["metadata"].get("annotations", {}).pop(SOURCE_SHA256_ANNOTATION, None)
    return objects


def test_from_cluster_renders_what_the_manifest_renders(lab: LabHandle) -> None:
    proc = kubehoist(
        "render", "--from-cluster", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(node_root(lab)), "--retry-period", "500ms",
    )  # fmt: skip
    node = lab.spec.api_node.name
    assert f"pod/{COMPONENT}-{node}" in proc.stderr
    endpoint = f"https://{lab.spec.control_plane_endpoint}"
    assert (
        f"control-plane endpoint {endpoint} (from configmap kube-system/kubeadm-config "
        "ClusterConfiguration.controlPlaneEndpoint)"
    ) in proc.stderr
    assert without_source(docs(proc.stdout)) == without_source(docs(render(lab)))


def test_from_cluster_with_an_existing_secret_runs_ready_standbys(clean_lab: LabHandle) -> None:
    lab = clean_lab
    secret = docs(render(lab))[0]
    lab.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(secret))
    # As from a workstation: no file of the node is read.
    proc = kubehoist(
        "render", "--from-cluster", "--kubeconfig", str(lab.kubeconfig),
        "--secret-name", secret["metadata"]["name"], "--retry-period", "500ms",
    )  # fmt: skip
    objects = docs(proc.stdout)
    assert [o["kind"] for o in objects] == ["Deployment", "PodDisruptionBudget"]
    lab.kubectl("apply", "--server-side", "-f", "-", input=proc.stdout)
    assert_ready_standbys(lab)
