"""The lab's plan: names, addresses and the files derived from kubeadm's output."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubehoist.errors import KubehoistError
from kubehoist.lab import kubeadm
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


def test_kubeadm_init_config_sets_endpoint_version_and_addons(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=3, workers=0)
    keys = kubeadm.JoinSecrets("abcdef.0123456789abcdef", "1" * 64)
    init, cluster, kubelet = yaml.safe_load_all(kubeadm.init_config(spec, spec.nodes[0], keys))
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert init["kind"] == "InitConfiguration"
    assert init["localAPIEndpoint"]["advertiseAddress"] == spec.nodes[0].ip
    assert init["nodeRegistration"]["name"] == "cp-1"
    assert init["bootstrapTokens"][0]["token"] == keys.token
    assert init["certificateKey"] == keys.certificate_key
    assert init["nodeRegistration"]["ignorePreflightErrors"] == sorted(kubeadm.IGNORED_PREFLIGHT)
    assert cluster["controlPlaneEndpoint"] == spec.control_plane_endpoint
    assert cluster["kubernetesVersion"] == spec.kubernetes_version
    assert set(cluster["apiServer"]["certSANs"]) >= {"127.0.0.1", *(n.ip for n in spec.nodes)}
    # the addons whose images the lab does not build
    assert cluster["dns"] == {"disabled": True} and cluster["proxy"] == {"disabled": True}


def test_kubeadm_join_config_of_a_control_plane_and_a_worker(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=2, workers=1)
    keys = kubeadm.JoinSecrets("abcdef.0123456789abcdef", "1" * 64)
    pin = "sha256:" + "2" * 64
    cp2 = yaml.safe_load(kubeadm.join_config(spec, spec.node("cp-2"), keys, pin))
    worker = yaml.safe_load(kubeadm.join_config(spec, spec.workers[0], keys, pin))
    for join in (cp2, worker):
        assert join["kind"] == "JoinConfiguration"
        discovery = join["discovery"]["bootstrapToken"]
        assert discovery["apiServerEndpoint"] == spec.control_plane_endpoint
        assert discovery["token"] == keys.token and discovery["caCertHashes"] == [pin]
    assert cp2["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": spec.node("cp-2").ip, "bindPort": 6443},
        "certificateKey": keys.certificate_key,
    }
    assert cp2["nodeRegistration"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert "controlPlane" not in worker and worker["nodeRegistration"]["taints"] == []


def test_join_secrets_are_made_once_in_kubeadm_formats(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", control_planes=1, workers=0)
    first = kubeadm.join_secrets(spec)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", first.token)
    assert re.fullmatch(r"[0-9a-f]{64}", first.certificate_key)
    assert kubeadm.join_secrets(spec) == first
    path = spec.root / "kubeadm" / "secrets.json"
    assert path.stat().st_mode & 0o777 == 0o600


def test_ca_cert_hash_is_the_spki_sha256(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt = tmp_path / "ca.crt"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kubeadm.ca_cert_hash(crt) == "sha256:" + hashlib.sha256(spki).hexdigest()
    crt.write_text("not a certificate")
    with pytest.raises(KubehoistError, match=r"ca\.crt"):
        kubeadm.ca_cert_hash(crt)


def test_plan_takes_a_supported_kubernetes_version_only(tmp_path: Path) -> None:
    spec = plan(tmp_path / "lab", kubernetes_version="v1.35.4")
    assert spec.kubernetes_version == "v1.35.4"
    assert LabSpec.from_json(spec.to_json()).kubernetes_version == "v1.35.4"
    with pytest.raises(ValueError, match=r"v1\.35\.4, v1\.36\.3"):
        plan(tmp_path / "lab", kubernetes_version="v1.35.3")
