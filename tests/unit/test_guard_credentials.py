"""The guard's certificates signed with a node's CA (guard.credentials)."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubehoist.cli import cli
from kubehoist.errors import KubehoistError
from kubehoist.guard import credentials

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def make_ca(*, days: int = 3650, key: object | None = None) -> tuple[bytes, bytes]:
    ca_key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = ca_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.parametrize("ca_key", [None, ec.generate_private_key(ec.SECP256R1())])
def test_issue_with_an_rsa_or_ecdsa_ca(ca_key: object) -> None:
    ca_pem, ca_key_pem = make_ca(key=ca_key)
    cert_pem, key_pem, not_after = credentials.issue_with_ca(
        ca_pem, ca_key_pem, node="cp-1", days=30, now=NOW
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.rfc4514_string() == "CN=kubehoist:guard:cp-1,O=kubehoist:guards"
    assert cert.not_valid_after_utc == not_after == NOW + dt.timedelta(days=30)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_never_valid_beyond_the_ca() -> None:
    ca_pem, ca_key_pem = make_ca(days=10)
    _, _, not_after = credentials.issue_with_ca(ca_pem, ca_key_pem, node="n", days=365, now=NOW)
    assert not_after == NOW + dt.timedelta(days=10)


def test_bad_ca_inputs_are_one_line_errors() -> None:
    ca_pem, ca_key_pem = make_ca()
    _, other_key = make_ca()
    with pytest.raises(KubehoistError, match=r"pki/ca.key: does not belong to pki/ca.crt"):
        credentials.issue_with_ca(ca_pem, other_key, node="n", days=1, now=NOW)
    with pytest.raises(KubehoistError, match=r"pki/ca.crt: not a PEM certificate"):
        credentials.issue_with_ca(b"garbage", ca_key_pem, node="n", days=1, now=NOW)
    with pytest.raises(KubehoistError, match=r"pki/ca.key: not an unencrypted PEM"):
        credentials.issue_with_ca(ca_pem, b"garbage", node="n", days=1, now=NOW)
    later = NOW + dt.timedelta(days=4000)
    with pytest.raises(KubehoistError, match=r"the cluster CA expired"):
        credentials.issue_with_ca(ca_pem, ca_key_pem, node="n", days=1, now=later)


def node_etc(tmp_path: Path, *, with_key: bool = True) -> Path:
    etc = tmp_path / "etc" / "kubernetes"
    (etc / "pki").mkdir(parents=True)
    (etc / "manifests").mkdir()
    ca_pem, ca_key_pem = make_ca()
    (etc / "pki" / "ca.crt").write_bytes(ca_pem)
    if with_key:
        (etc / "pki" / "ca.key").write_bytes(ca_key_pem)
    return etc


def test_node_setup_writes_the_kubeconfig_then_the_manifest(tmp_path: Path) -> None:
    etc = node_etc(tmp_path)
    out = credentials.node_setup(
        etc, node="cp-1", server="https://lb:6443", days=30,
        manifest_name="kubehoist-guard-kube-controller-manager.yaml",
        manifest_text="kind: Pod\n", now=NOW,
    )  # fmt: skip
    assert out == "installed 2026-12-25T12:00:00Z"
    conf = etc / "kubehoist" / "guard.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    doc = yaml.safe_load(conf.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://lb:6443"
    ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == (etc / "pki" / "ca.crt").read_bytes()
    manifest = etc / "manifests" / "kubehoist-guard-kube-controller-manager.yaml"
    assert manifest.read_text() == "kind: Pod\n"
    assert not list(etc.rglob(".*kubehoist-tmp"))


def test_node_setup_without_a_ca_key_says_so_with_its_exit_code(tmp_path: Path) -> None:
    etc = node_etc(tmp_path, with_key=False)
    result = CliRunner().invoke(
        cli,
        [
            "guard", "node-setup", "--node", "cp-1", "--server", "https://lb:6443",
            "--etc-dir", str(etc), "--manifest-name", "g.yaml",
            "--manifest-b64", base64.b64encode(b"kind: Pod\n").decode(),
        ],
    )  # fmt: skip
    assert result.exit_code == credentials.NO_CA_KEY_EXIT
    assert "ca.key: no such file (an external CA?)" in result.output
    assert not (etc / "manifests" / "g.yaml").exists()
    assert not (etc / "kubehoist" / "guard.conf").exists()


def test_the_kubeconfigs_client_certificate_expiry_inline_in_a_file_or_none(
    tmp_path: Path,
) -> None:
    from kubehoist import kube
    from tests.unit.kubefake import write_kubeconfig

    ca_pem, ca_key_pem = make_ca()
    cert_pem, key_pem, not_after = credentials.issue_with_ca(
        ca_pem, ca_key_pem, node="cp-1", days=30, now=NOW
    )
    inline = tmp_path / "guard.conf"
    inline.write_text(
        credentials.kubeconfig_text(
            server="https://cp:6443",
            ca_pem=ca_pem,
            cert_pem=cert_pem,
            key_pem=key_pem,
            user="kubehoist:guard:cp-1",
        )
    )
    assert (
        credentials.client_certificate_not_after(kube.target(kubeconfig=inline).config) == not_after
    )
    # A file next to the kubeconfig, named relatively (as kubeadm's kubelet.conf does).
    (tmp_path / "client.crt").write_bytes(cert_pem)
    doc = yaml.safe_load(inline.read_text())
    doc["users"][0]["user"] = {"client-certificate": "client.crt", "client-key": "client.key"}
    by_file = tmp_path / "by-file.conf"
    by_file.write_text(yaml.safe_dump(doc))
    assert (
        credentials.client_certificate_not_after(kube.target(kubeconfig=by_file).config)
        == not_after
    )
    (tmp_path / "client.crt").write_bytes(b"not a certificate")
    assert credentials.client_certificate_not_after(kube.target(kubeconfig=by_file).config) is None
    token = write_kubeconfig(tmp_path / "token.conf")
    assert credentials.client_certificate_not_after(kube.target(kubeconfig=token).config) is None
