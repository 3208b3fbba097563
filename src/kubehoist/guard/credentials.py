"""The guard's own credentials: a client certificate per node, user
`kubehoist:guard:<node>`, group `kubehoist:guards`, in a kubeconfig with everything
embedded (`/etc/kubernetes/kubehoist/guard.conf`, 0600).

Two issuers:

- **on the node** (default where possible): `kubehoist guard node-setup` runs in a
  node-pinned helper pod (the guard's image), reads the cluster CA from the node's
  `/etc/kubernetes/pki/ca.{crt,key}` (present on every kubeadm control-plane node),
  makes the key and signs the certificate there, as `kubeadm kubeconfig user` would.
  Neither the CA key nor the guard's key ever leaves the node, and no controller
  manager is needed — which matters, because the guard is installed exactly when the
  controller managers may all be down;
- **by the cluster's signer** (`--issuer csr`, or when a node has no CA key, e.g. a
  kubeadm external-CA cluster): a CertificateSigningRequest signed by the controller
  manager (see `guard.install`).

The functions here are pure but for `node_setup`, which reads and writes the node's
files under `etc_dir`.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ConfigError

from kubehoist.errors import KubehoistError
from kubehoist.guard import manifest as guardmanifest

CA_CERT = "pki/ca.crt"
CA_KEY = "pki/ca.key"
GUARD_CONF = "kubehoist/guard.conf"
NO_CA_KEY_EXIT = 3
"""`node-setup`'s exit code when the node holds no CA key (an external CA)."""


class NoCAKeyError(KubehoistError):
    exit_code = NO_CA_KEY_EXIT


def guard_user(node: str) -> str:
    return f"{guardmanifest.GUARD_USER}:{node}"


def _subject(node: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, guardmanifest.GUARD_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, guard_user(node)),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_key_and_csr(node: str) -> tuple[bytes, bytes]:
    """(private key PEM, CSR PEM) for the guard of `node`: EC P-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(node))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def issue_with_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes, *, node: str, days: int, now: dt.datetime
) -> tuple[bytes, bytes, dt.datetime]:
    """(certificate PEM, key PEM, not-after) of a client certificate for the guard of
    `node`, signed by the given CA; never valid beyond the CA itself."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise KubehoistError(f"{CA_CERT}: not a PEM certificate ({exc})") from None
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KubehoistError(f"{CA_KEY}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(
        ca_key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise KubehoistError(f"{CA_KEY}: unsupported key type {type(ca_key).__name__}")
    if ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise KubehoistError(f"{CA_KEY}: does not belong to {CA_CERT}")
    if ca_cert.not_valid_after_utc <= now:
        raise KubehoistError(
            f"{CA_CERT}: the cluster CA expired at {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(node))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    algorithm = (
        None
        if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    cert = builder.sign(ca_key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), not_after


def client_certificate_not_after(config: SingleConfig) -> dt.datetime | None:
    """The end of validity of the kubeconfig's client certificate (the first one of
    its PEM, inline or in a file); None when it authenticates otherwise or the
    certificate cannot be read (the guard's reads then say more than this could)."""
    user = config.user
    try:
        if user is None:
            return None
        if user.client_cert_data:
            pem = base64.b64decode(user.client_cert_data)
        elif user.client_cert:
            pem = Path(config.abs_file(user.client_cert)).read_bytes()
        else:
            return None
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc
    except (OSError, ValueError, ConfigError):  # base64, PEM, DER, a relative path
        return None


def kubeconfig_text(
    *, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> str:
    """A kubeconfig with everything embedded (the guard mounts no other file)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": "guard", "context": {"cluster": "cluster", "user": user}}],
        "current-context": "guard",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.kubehoist-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def node_setup(
    etc_dir: Path,
    *,
    node: str,
    server: str,
    days: int,
    manifest_name: str,
    manifest_text: str,
    now: dt.datetime,
) -> str:
    """On a control-plane node (its `/etc/kubernetes` at `etc_dir`): issue the guard's
    certificate with the node's CA, write `guard.conf` (0600), then the guard's static
    pod manifest. Returns `installed <not-after>`."""
    ca_cert_path, ca_key_path = etc_dir / CA_CERT, etc_dir / CA_KEY
    try:
        ca_cert_pem = ca_cert_path.read_bytes()
    except FileNotFoundError:
        raise KubehoistError(
            f"{ca_cert_path}: no such file (not a kubeadm control-plane node?)"
        ) from None
    try:
        ca_key_pem = ca_key_path.read_bytes()
    except FileNotFoundError:
        raise NoCAKeyError(f"{ca_key_path}: no such file (an external CA?)") from None
    cert_pem, key_pem, not_after = issue_with_ca(
        ca_cert_pem, ca_key_pem, node=node, days=days, now=now
    )
    conf = kubeconfig_text(
        server=server, ca_pem=ca_cert_pem, cert_pem=cert_pem, key_pem=key_pem, user=guard_user(node)
    )
    write_atomic(etc_dir / GUARD_CONF, conf.encode())
    write_atomic(etc_dir / "manifests" / manifest_name, manifest_text.encode())
    return f"installed {not_after:%Y-%m-%dT%H:%M:%SZ}"
