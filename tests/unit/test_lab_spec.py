"""The lab's plan: names, addresses and the files derived from kubeadm's output."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from kubehoist.errors import KubehoistError
from kubehoist.lab import kubeadm
from kubehoist.lab.procs import command_from_manifest
from kubehoist.lab.spec import CLUSTER_CIDR, LAN_SUBNET, LabSpec, plan


def test_plan_is_unique_and_in_range(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=3, workers=5)
    assert [n.name for n in spec.control_planes] == ["cp-1", "cp-2", "cp-3"]
    assert len(spec.workers) == 5
    ips = [n.ip for n in spec.nodes]
    cidrs = [n.pod_cidr for n in spec.nodes]
    assert len(set(ips)) == len(ips) and len(set(cidrs)) == len(cidrs)
    for n in spec.nodes:
        assert ipaddress.ip_address(n.ip) in LAN_SUBNET
        assert ipaddress.ip_network(n.pod_cidr).subnet_of(CLUSTER_CIDR)
        assert len(n.veth) <= 15  # a Linux interface name
    assert spec.lan_gateway not in ips


def test_spec_round_trips(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=2, workers=1)
    spec.save()
    assert LabSpec.load(spec.root) == spec


def test_two_roots_two_ids(tmp_path: Path) -> None:
    assert plan(tmp_path / "a").lab_id != plan(tmp_path / "b").lab_id


@pytest.mark.parametrize(("cps", "workers"), [(0, 1), (10, 1), (1, -1)])
def test_plan_rejects_bad_counts(tmp_path: Path, cps: int, workers: int) -> None:
    with pytest.raises(ValueError):
        plan(tmp_path, control_planes=cps, workers=workers)


def test_kubeadm_config_sets_endpoint_and_version(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=3, workers=0)
    init, cluster, kubelet = yaml.safe_load_all(kubeadm.config_for(spec, spec.nodes[1]))
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert init["localAPIEndpoint"]["advertiseAddress"] == spec.nodes[1].ip
    assert init["nodeRegistration"]["name"] == "cp-2"
    assert cluster["controlPlaneEndpoint"] == spec.control_plane_endpoint
    assert cluster["kubernetesVersion"] == spec.kubernetes_version
    assert set(cluster["apiServer"]["certSANs"]) >= {"127.0.0.1", *(n.ip for n in spec.nodes)}


MANIFEST = """
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --data-dir=/var/lib/etcd
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --listen-client-urls=https://127.0.0.1:2379
    - /etc/kubernetes/pki/loose-arg
    volumeMounts:
    - {name: etcd-data, mountPath: /var/lib/etcd}
    - {name: etcd-certs, mountPath: /etc/kubernetes/pki/etcd}
  volumes:
  - {name: etcd-data, hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}}
  - {name: etcd-certs, hostPath: {path: /etc/kubernetes/pki/etcd, type: DirectoryOrCreate}}
"""


def test_command_from_manifest_moves_only_mounted_paths(tmp_path: Path) -> None:
    m = tmp_path / "etcd.yaml"
    m.write_text(MANIFEST)
    argv = command_from_manifest(m, Path("/lab/nodes/cp-1"))
    assert argv == (
        "etcd",
        "--data-dir=/lab/nodes/cp-1/var/lib/etcd",
        "--cert-file=/lab/nodes/cp-1/etc/kubernetes/pki/etcd/server.crt",
        "--listen-client-urls=https://127.0.0.1:2379",
        "/etc/kubernetes/pki/loose-arg",  # not under a mount: left alone
    )


def test_command_from_manifest_bad_file(tmp_path: Path) -> None:
    m = tmp_path / "bad.yaml"
    m.write_text("kind: Pod\nspec: {}\n")
    with pytest.raises(KubehoistError, match=r"bad\.yaml"):
        command_from_manifest(m, tmp_path)


def test_plan_takes_a_supported_kubernetes_version_only(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", kubernetes_version="v1.35.4")
    assert spec.kubernetes_version == "v1.35.4"
    assert LabSpec.from_json(spec.to_json()).kubernetes_version == "v1.35.4"
    with pytest.raises(ValueError, match=r"v1\.35\.4, v1\.36\.3"):
        plan(tmp_path / "lab", kubernetes_version="v1.35.3")
