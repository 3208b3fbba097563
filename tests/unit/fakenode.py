"""A fake node filesystem for render tests: synthetic PKI, kubeconfigs, admin.conf.

Everything is generated with `cryptography` (EC keys: fast) under a temporary host
root, laid out where the static pod's hostPath volumes say the files are.
"""

from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubehoist.components import FileRole
from kubehoist.manifest import StaticPod
from kubehoist.render import RenderOptions, plan_flag_needs, plan_flags

NOW = datetime(2025, 6, 1, tzinfo=UTC)
"""The time pure render tests pass in; generated certificates are valid from before it
until years after the real clock, so the CLI (which reads the clock) accepts them too."""
VALID_UNTIL = max(NOW, datetime.now(UTC)) + timedelta(days=3650)
NODE_SERVER = "https://10.0.0.11:6443"
ENDPOINT = "https://cp.example.internal:6443"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Pki:
    """One CA, and certificates it signs on demand."""

    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        self.ca_cert = self.certificate("kubernetes", ca=True)

    def key_pem(self) -> bytes:
        return self.ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def certificate(
        self,
        cn: str,
        *,
        ca: bool = False,
        not_after: datetime | None = None,
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name("kubernetes"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(days=100))
            .not_valid_after(not_after or VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(self.ca_key, hashes.SHA256())

    def cert_pem(self, cn: str = "kubernetes", **kwargs: datetime) -> bytes:
        if not kwargs and cn == "kubernetes":
            return self.ca_cert.public_bytes(serialization.Encoding.PEM)
        return self.certificate(cn, **kwargs).public_bytes(serialization.Encoding.PEM)

    def kubeconfig(
        self, *, server: str = NODE_SERVER, user: str = "system:kube-controller-manager"
    ) -> bytes:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {
                        "certificate-authority-data": b64(self.cert_pem()),
                        "server": server,
                    },
                }
            ],
            "contexts": [
                {"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}
            ],
            "current-context": f"{user}@kubernetes",
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(
                            self.cert_pem(user, not_after=VALID_UNTIL - timedelta(days=1))
                        ),
                        "client-key-data": b64(self.key_pem()),
                    },
                }
            ],
        }
        return yaml.safe_dump(doc).encode()


class FakeNode:
    """A host root with the files a static pod's flags name."""

    def __init__(self, root: Path, pki: Pki) -> None:
        self.root = root
        self.pki = pki

    def write(self, node_path: str, data: bytes) -> Path:
        path = self.root / node_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise AssertionError(f"{node_path} is a directory")
        path.write_bytes(data)
        return path

    def found_file(self, path: str) -> bytes:
        """Bytes for a file render finds by its path: what its name suggests."""
        name = posixpath.basename(path)
        if name.endswith((".crt", ".pem")) and "key" not in name:
            return self.pki.cert_pem()
        if name.endswith(".key") or name.endswith("-key.pem"):
            return self.pki.key_pem()
        if name.endswith((".conf", ".kubeconfig")) or name == "kubeconfig":
            return self.pki.kubeconfig()
        return f"# {name}: a configuration file the component reads\n".encode()

    def write_admin_conf(self, server: str = ENDPOINT) -> None:
        self.write(
            "/etc/kubernetes/admin.conf",
            self.pki.kubeconfig(server=server, user="kubernetes-admin"),
        )

    def populate(self, pod: StaticPod, options: RenderOptions) -> dict[str, str]:
        """Write every file the flags name (and what those name); container -> node path."""
        written: dict[str, str] = {}
        plan = plan_flag_needs(pod, plan_flags(pod, options).items)
        for need in plan.needs:
            host = need.host.host_path
            assert host is not None
            if need.role is FileRole.KUBECONFIG:
                data = self.pki.kubeconfig()
            elif need.role is FileRole.COMPONENT_CONFIG:
                kubeconfig = posixpath.join(posixpath.dirname(need.path), "kubeconfig")
                data = yaml.safe_dump(
                    {
                        "apiVersion": "kubescheduler.config.k8s.io/v1",
                        "kind": "KubeSchedulerConfiguration",
                        "clientConnection": {"kubeconfig": kubeconfig},
                    }
                ).encode()
                located = pod.locate(kubeconfig)
                assert located is not None and located.host_path is not None
                self.write(located.host_path, self.pki.kubeconfig())
                written[kubeconfig] = located.host_path
            elif need.role is FileRole.CERT:
                data = self.pki.cert_pem()
            elif need.role is FileRole.KEY:
                data = self.pki.key_pem()
            elif need.role is FileRole.FOUND:
                data = self.found_file(need.path)
            else:
                data = b"[Global]\nZone = test\n"
            self.write(host, data)
            written[need.path] = host
        self.write_admin_conf()
        return written
