"""Day two on a pivoted, guarded HA cluster: kubeadm upgrades it from v1.35.4 to
v1.36.3 between `kubehoist upgrade prepare` and `upgrade complete`.

A lab of three control planes and a worker, made by kubeadm at v1.35.4; the
controller manager and the scheduler are pivoted and guarded. Then the documented
kubeadm procedure (`kubehoist lab upgrade`: each node's kubeadm and kubelet packages,
`kubeadm upgrade apply` on cp-1, `kubeadm upgrade node` on the others). Checked:
kubeadm completes; `complete` refuses while a control plane is not upgraded; after it,
the Deployments run v1.36.3 with kubeadm's renewed credentials, the parked manifests
are kubeadm's new ones (and a rollback restores exactly those); a Deployment pod never
runs a version newer than an API server (sampled all along); a component always has a
holder of its Lease at the end of each step.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod, Secret

from kubehoist import kubeversion
from kubehoist.election import node_of_host
from tests.e2e.conftest import LabHandle, host_port, kubehoist, lab_root, start_lab

pytestmark = pytest.mark.lab

OLD, NEW = "v1.35.4", "v1.36.3"
COMPONENTS = ("kube-controller-manager", "kube-scheduler")
PARK_DIR = "etc/kubernetes/kubehoist/parked"


@pytest.fixture(scope="module")
def ulab() -> Iterator[LabHandle]:
    root = lab_root().with_name(lab_root().name + "-upgrade")
    for version in (OLD, NEW):
        kubehoist("lab", "build", "--kubernetes-version", version, timeout=3600)
    handle = start_lab(root, host_port() + 40, control_planes=3, workers=1, kubernetes_version=OLD)
    try:
        yield handle
    finally:
        if not os.environ.get("KUBEHOIST_TEST_KEEP_LAB"):
            kubehoist("lab", "down", "--purge", "--root", str(handle.spec.root), check=False)


def k(lab: LabHandle, *args: str, check: bool = True, timeout: float = 900) -> str:
    out = kubehoist(*args, "--kubeconfig", str(lab.kubeconfig), check=check, timeout=timeout)
    return out.stdout + out.stderr


def lab_cmd(lab: LabHandle, *args: str, timeout: float = 1800) -> str:
    out = kubehoist("lab", *args, "--root", str(lab.spec.root), timeout=timeout)
    return out.stdout + out.stderr


def version_of(image: str | None) -> kubeversion.KubeVersion:
    found = kubeversion.from_image(image or "")
    assert found is not None, image
    return found


def pods(lab: LabHandle, **labels: str) -> list[Pod]:
    return list(lab.client.list(Pod, namespace="kube-system", labels=labels))


def holder(lab: LabHandle, component: str) -> str:
    lease = lab.client.get(Lease, component, namespace="kube-system")
    return (lease.spec.holderIdentity if lease.spec else None) or ""


def deployment_leads(lab: LabHandle, component: str) -> bool:
    names = {
        p.metadata.name for p in pods(lab, **{"app.kubernetes.io/name": component}) if p.metadata
    }
    return holder(lab, component).rpartition("_")[0] in names


class SkewSampler(threading.Thread):
    """Every 0.5 s: the versions of the Running pods of each pivoted Deployment against
    the oldest kube-apiserver (its mirror pods). A Deployment's pods reach the API
    servers through the control-plane endpoint, so any one of them."""

    def __init__(self, lab: LabHandle) -> None:
        super().__init__(daemon=True)
        self.lab, self.stop = lab, threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        self.errors = 0

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                apis = [version_of(p.spec.containers[0].image) for p in pods(
                    self.lab, component="kube-apiserver") if p.spec]  # fmt: skip
                for comp in COMPONENTS:
                    for p in pods(self.lab, **{"app.kubernetes.io/name": comp}):
                        if not (p.status and p.status.phase == "Running" and p.spec):
                            continue
                        v = version_of(p.spec.containers[0].image)
                        if apis and (v.major, v.minor) > min((a.major, a.minor) for a in apis):
                            name = p.metadata.name if p.metadata else "?"
                            self.violations.append(f"{name} {v} > apiserver {min(apis)}")
                self.samples += 1
            except Exception:
                self.errors += 1  # an API server restarting under kubeadm


def node_root(lab: LabHandle, name: str) -> Path:
    return lab.spec.node(name).root(lab.spec.root)


# The lab (three control planes made by kubeadm, in the fixture) and the upgrade of
# every node take longer than the suite's per-test timeout.
@pytest.mark.timeout(3600)
def test_kubeadm_upgrade_of_a_pivoted_guarded_ha_cluster(ulab: LabHandle) -> None:
    lab = ulab
    cps = [n.name for n in lab.spec.control_planes]
    for comp in COMPONENTS:
        k(lab, "pivot", comp, "--host-root", str(node_root(lab, cps[0])),
          "--retry-period", "500ms", "--timeout", "240")  # fmt: skip
    k(lab, "guard", "install", "--component", "kube-controller-manager", timeout=600)
    sampler = SkewSampler(lab)
    sampler.start()
    try:
        # 1. prepare: the static pods run again, as standbys; the Deployments keep leading.
        out = k(lab, "upgrade", "prepare", "--timeout", "240")
        assert "ready for kubeadm" in out, out
        for comp in COMPONENTS:
            for node in cps:
                [mirror] = [
                    p for p in pods(lab, component=comp)
                    if p.metadata and p.metadata.name == f"{comp}-{node}"
                ]  # fmt: skip
                assert mirror.spec is not None and mirror.spec.containers[0].image.endswith(OLD)
                assert not (node_root(lab, node) / PARK_DIR / f"{comp}.yaml").exists()
            assert deployment_leads(lab, comp), holder(lab, comp)
        # pivot refuses while an upgrade is under way
        refused = kubehoist("pivot", "--kubeconfig", str(lab.kubeconfig), check=False)
        assert refused.returncode != 0 and "upgrade complete" in refused.stderr

        # 2. kubeadm upgrades the first control plane only: complete refuses, changes nothing.
        out = lab_cmd(lab, "upgrade", "--kubernetes-version", NEW, "--node", cps[0])
        assert f"node {cps[0]}: upgraded to {NEW}" in out, out
        early = kubehoist("upgrade", "complete", "--kubeconfig", str(lab.kubeconfig),
                          "--host-root", str(node_root(lab, cps[0])), check=False)  # fmt: skip
        assert early.returncode != 0
        [line] = early.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: node cp-2: ") and "run `kubeadm upgrade node` there" in line
        for comp in COMPONENTS:
            dep = lab.client.get(Deployment, comp, namespace="kube-system")
            assert dep.spec is not None and dep.spec.template.spec is not None
            assert dep.spec.template.spec.containers[0].image.endswith(OLD)

        # 3. kubeadm upgrades the other control planes and the worker; then complete.
        others = [n.name for n in (*lab.spec.control_planes[1:], *lab.spec.workers)]
        node_args = [a for n in others for a in ("--node", n)]
        lab_cmd(lab, "upgrade", "--kubernetes-version", NEW, *node_args)
        out = k(lab, "upgrade", "complete", "--host-root", str(node_root(lab, cps[0])),
                "--timeout", "300")  # fmt: skip
        assert f"kube-controller-manager {NEW} runs from its Deployment" in out, out
    finally:
        sampler.stop.set()
        sampler.join(5)
    print(f"\n[upgrade] skew samples {sampler.samples}, read errors {sampler.errors}")
    assert sampler.samples > 50
    assert sampler.violations == []

    version = lab.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{NEW}"' in version.split('"serverVersion"')[1]
    for comp in COMPONENTS:
        dep = lab.client.get(Deployment, comp, namespace="kube-system")
        assert dep.spec is not None and dep.spec.template.spec is not None
        assert dep.spec.template.spec.containers[0].image == f"registry.k8s.io/{comp}:{NEW}"
        assert deployment_leads(lab, comp), holder(lab, comp)
        # no static pod of it runs (the kubelets delete the mirror pods once the pods
        # stopped); every node parked kubeadm's new manifest
        mirrors = {f"{comp}-{n}" for n in cps}
        deadline = time.monotonic() + 60
        while [p for p in pods(lab, component=comp) if p.metadata and p.metadata.name in mirrors]:
            assert time.monotonic() < deadline, f"mirror pods of {comp} still there"
            time.sleep(1)
        for node in cps:
            parked = node_root(lab, node) / PARK_DIR / f"{comp}.yaml"
            doc = yaml.safe_load(parked.read_text())
            assert doc["spec"]["containers"][0]["image"] == f"registry.k8s.io/{comp}:{NEW}"
    # The Secret holds the kubeconfig kubeadm renewed during the upgrade.
    secret = lab.client.get(Secret, "kube-controller-manager-credentials", namespace="kube-system")
    conf_key = next(k_ for k_ in (secret.data or {}) if k_.endswith("controller-manager.conf"))
    in_secret = yaml.safe_load(base64.b64decode((secret.data or {})[conf_key]))
    on_node = yaml.safe_load(
        (node_root(lab, cps[0]) / "etc/kubernetes/controller-manager.conf").read_text()
    )
    cert = in_secret["users"][0]["user"]["client-certificate-data"]
    assert cert == on_node["users"][0]["user"]["client-certificate-data"]
    x509.load_pem_x509_certificate(base64.b64decode(cert))

    # 4. A rollback restores kubeadm's new static pods, byte for byte.
    parked = {
        (node, comp): hashlib.sha256(
            (node_root(lab, node) / PARK_DIR / f"{comp}.yaml").read_bytes()
        ).hexdigest()
        for node in cps
        for comp in COMPONENTS
    }
    for comp in COMPONENTS:
        k(lab, "rollback", comp, "--timeout", "240")
    for (node, comp), sha in parked.items():
        live = node_root(lab, node) / "etc/kubernetes/manifests" / f"{comp}.yaml"
        assert hashlib.sha256(live.read_bytes()).hexdigest() == sha, (node, comp)
    deadline = time.monotonic() + 120
    # a static pod's identity is its node's hostname (an FQDN on some lab nodes)
    while not all(node_of_host(holder(lab, c).rpartition("_")[0], cps) for c in COMPONENTS):
        assert time.monotonic() < deadline, [holder(lab, c) for c in COMPONENTS]
        time.sleep(1)
