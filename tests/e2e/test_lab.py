"""The lab: a cluster made by `kubeadm init` and `join`, nodes kept Ready by their kubelets."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod

from tests.e2e.conftest import LabHandle, kubehoist

pytestmark = pytest.mark.lab

# kube-controller-manager's default --node-monitor-grace-period in v1.36.
NODE_MONITOR_GRACE = 50


def test_apiserver_ready(lab: LabHandle) -> None:
    out = lab.kubectl("get", "--raw", "/readyz").stdout
    assert out.strip() == "ok"
    version = json.loads(lab.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == lab.spec.kubernetes_version


def test_kubeadm_wrote_the_node_files(lab: LabHandle) -> None:
    for node in lab.spec.control_planes:
        manifest = node.manifests_dir(lab.spec.root) / "kube-controller-manager.yaml"
        pod = yaml.safe_load(manifest.read_text())
        command = pod["spec"]["containers"][0]["command"]
        assert command[0] == "kube-controller-manager"
        # Paths are the real node paths: the lab does not rewrite kubeadm's manifests.
        assert "--kubeconfig=/etc/kubernetes/controller-manager.conf" in command
        conf = yaml.safe_load(
            (node.root(lab.spec.root) / "etc/kubernetes/controller-manager.conf").read_text()
        )
        assert conf["clusters"][0]["cluster"]["server"] == f"https://{node.ip}:6443"
    kubeadm_cm = lab.client.get(ConfigMap, "kubeadm-config", namespace="kube-system")
    assert kubeadm_cm.data is not None
    cluster = yaml.safe_load(kubeadm_cm.data["ClusterConfiguration"])
    assert cluster["controlPlaneEndpoint"] == lab.spec.control_plane_endpoint
    assert cluster["kubernetesVersion"] == lab.spec.kubernetes_version


def test_nodes_registered_as_kubeadm_does(lab: LabHandle) -> None:
    nodes = {n.metadata.name: n for n in lab.client.list(Node) if n.metadata}
    assert set(nodes) == {n.name for n in lab.spec.nodes}
    for spec_node in lab.spec.nodes:
        node = nodes[spec_node.name]
        assert node.spec is not None and node.metadata is not None
        # No CIDR allocation (kubeadm without podSubnet): the lab's CNI configuration
        # gives each node its planned range (tests/e2e/test_node.py checks pod IPs).
        assert not node.spec.podCIDR
        labels = node.metadata.labels or {}
        # node.kubernetes.io/* taints come and go with the node-lifecycle controller
        # (see test_nodes_stay_ready_past_the_grace_period); here only kubeadm's.
        taints = {
            (t.key, t.effect)
            for t in node.spec.taints or []
            if not t.key.startswith("node.kubernetes.io/")
        }
        if spec_node.control_plane:
            assert "node-role.kubernetes.io/control-plane" in labels
            assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints
        else:
            assert not any(k.startswith("node-role.kubernetes.io/") for k in labels)
            assert not taints
        assert node.status is not None
        assert {a.address for a in node.status.addresses or []} >= {spec_node.ip}


def test_object_round_trip(lab: LabHandle) -> None:
    name = f"roundtrip-{int(time.time())}"
    lab.client.create(
        ConfigMap(metadata=ObjectMeta(name=name, namespace="default"), data={"k": "v"})
    )
    got = lab.client.get(ConfigMap, name, namespace="default")
    assert got.data == {"k": "v"}
    out = lab.kubectl("get", "configmap", name, "-n", "default", "-o", "jsonpath={.data.k}")
    assert out.stdout == "v"


def _lease_renewed_recently(lab: LabHandle, name: str, within: float) -> bool:
    try:
        lease = lab.client.get(Lease, name, namespace="kube-system")
    except Exception:
        return False
    renew = lease.spec.renewTime if lease.spec else None
    if renew is None:
        return False
    return (dt.datetime.now(dt.UTC) - renew).total_seconds() < within


@pytest.fixture(scope="module")
def controller_manager(lab: LabHandle) -> None:
    """kube-controller-manager runs: kubeadm's static pod, run by cp-1's kubelet."""
    deadline = time.monotonic() + 180
    while not _lease_renewed_recently(lab, "kube-controller-manager", 15):
        assert time.monotonic() < deadline, "kube-controller-manager never held its lease"
        time.sleep(1)


def test_nodes_stay_ready_past_the_grace_period(lab: LabHandle, controller_manager: None) -> None:
    # The node-lifecycle controller runs (its controller manager leads) and would mark a
    # node NotReady and taint it unreachable after the grace period without heartbeats.
    time.sleep(NODE_MONITOR_GRACE + 15)
    for node in lab.client.list(Node):
        assert node.status is not None and node.spec is not None and node.metadata is not None
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
        bad = {t.key for t in node.spec.taints or []} & {
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/not-ready",
        }
        assert not bad, (node.metadata.name, bad)


def test_lab_status_reports_components(lab: LabHandle) -> None:
    out = lab.kubehoist("lab", "status", "-o", "json")
    info = json.loads(out.stdout)
    assert info["phase"] == "ready" and info["readyz"] is True
    # etcd and kube-apiserver are kubeadm's static pods, seen through the node's CRI
    for node in lab.spec.control_planes:
        for name in ("etcd", "kube-apiserver"):
            pod = info["processes"][f"{name}-{node.name}"]
            assert pod["state"] == "CONTAINER_RUNNING", pod
            assert pod["pid"] and Path(f"/proc/{pod['pid']}").exists()
            assert name in Path(f"/proc/{pod['pid']}/cmdline").read_text()
    assert {n["ready"] for n in info["nodes"]} == {"True"}


def test_kubeadm_made_the_control_plane_static_pods(lab: LabHandle) -> None:
    for node in lab.spec.control_planes:
        names = sorted(p.name for p in node.manifests_dir(lab.spec.root).iterdir())
        assert names == [
            "etcd.yaml",
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml",
        ]
        for component in ("etcd", "kube-apiserver"):
            pod = lab.client.get(Pod, f"{component}-{node.name}", namespace="kube-system")
            assert pod.metadata is not None and pod.metadata.annotations is not None
            assert pod.metadata.annotations["kubernetes.io/config.source"] == "file"
    # kubeadm's own record of the cluster: the addons the lab does not build are off
    cm = lab.client.get(ConfigMap, "kubeadm-config", namespace="kube-system")
    assert cm.data is not None
    cluster = yaml.safe_load(cm.data["ClusterConfiguration"])
    assert cluster["dns"]["disabled"] is True and cluster["proxy"]["disabled"] is True
    log = (lab.spec.api_node.root(lab.spec.root) / "var/log/kubeadm.log").read_text()
    assert "Your Kubernetes control-plane has initialized successfully!" in log
    for worker in lab.spec.workers:
        log = (worker.root(lab.spec.root) / "var/log/kubeadm.log").read_text()
        assert "This node has joined the cluster" in log


def test_up_on_a_running_lab_says_so(lab: LabHandle) -> None:
    pid_before = json.loads(lab.kubehoist("lab", "status", "-o", "json").stdout)["supervisor_pid"]
    out = kubehoist("lab", "up", "--root", str(lab.spec.root))
    assert "already running" in out.stderr
    pid_after = json.loads(lab.kubehoist("lab", "status", "-o", "json").stdout)["supervisor_pid"]
    assert pid_before == pid_after


def test_apiserver_is_restarted_when_it_dies(lab: LabHandle) -> None:
    key = f"kube-apiserver-{lab.spec.api_node.name}"
    info = json.loads(lab.kubehoist("lab", "status", "-o", "json").stdout)
    old = info["processes"][key]
    subprocess.run(["kill", "-9", str(old["pid"])], check=True)
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "kube-apiserver did not come back"
        info = json.loads(lab.kubehoist("lab", "status", "-o", "json", check=False).stdout)
        new = info["processes"].get(key, {})
        if new.get("pid") and new["pid"] != old["pid"] and info["readyz"]:
            break
        time.sleep(1)
    # the kubelet restarted the static pod's container (a new attempt)
    assert new["restarts"] > old["restarts"]
