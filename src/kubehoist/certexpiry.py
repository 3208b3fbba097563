"""How long the Deployment's client certificates have left, read from its Secret.

kubeadm issues `controller-manager.conf`'s and `scheduler.conf`'s client certificates
for one year and renews them on the node (`kubeadm certs renew`, or an upgrade); the
Deployment runs on the copy pivot put into its credentials Secret, which nothing
renews. `status` shows the days left of every client certificate in the Secret's
kubeconfigs (embedded `client-certificate-data`, or a `client-certificate` that names
another key of the Secret), warns under 30 days and calls an expired one an error;
`credentials refresh` replaces the copy. The Secret is found by kubehoist's labels
(render labels it like the Deployment), with one LIST for all components.

Pure: the Secret comes in as JSON. Never returns or prints key material:
only subjects, serial numbers and dates.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from cryptography import x509

from kubehoist.components import FileRole
from kubehoist.constants import (
    CREDENTIALS_DIR,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NAME_LABEL,
    Selector,
    label_selector,
)
from kubehoist.errors import KubehoistError
from kubehoist.render import kubeconfig as kubeconfig_model
from kubehoist.render.credentials import sniff_role

WARN_WITHIN: Final = timedelta(days=30)
Level: TypeAlias = Literal["ok", "warning", "error"]


@dataclass(frozen=True, kw_only=True)
class ClientCert:
    """One client certificate a kubeconfig in the Secret presents."""

    secret_key: str
    """The Secret key of the kubeconfig."""
    user: str
    """The kubeconfig's users[].name."""
    subject: str
    serial: str
    """Hex, as `openssl x509 -serial` prints it."""
    not_after: datetime

    def days_left(self, now: datetime) -> int:
        """Whole days until it expires (negative once it has)."""
        return (self.not_after - now) // timedelta(days=1)

    def level(self, now: datetime, warn_within: timedelta = WARN_WITHIN) -> Level:
        if self.not_after <= now:
            return "error"
        return "warning" if self.not_after - now <= warn_within else "ok"

    def message(self, now: datetime, *, component: str, secret: str) -> str | None:
        """The warning or error line for this certificate, or None while it is fine."""
        level = self.level(now)
        where = f"Secret {secret} key {self.secret_key} (user {self.user}, {self.subject})"
        how = (
            f"renew it on the nodes (kubeadm certs renew) and run `credentials refresh {component}`"
        )
        if level == "error":
            return (
                f"{where}: client certificate expired on {self.not_after:%Y-%m-%d %H:%M} UTC; {how}"
            )
        if level == "warning":
            return (
                f"{where}: client certificate expires in {self.days_left(now)} days "
                f"({self.not_after:%Y-%m-%d}); {how}"
            )
        return None


@dataclass(frozen=True, kw_only=True)
class CredentialsExpiry:
    """The client certificates of one component's Deployment, or why they are unknown."""

    secret: str
    """namespace/name of the credentials Secret."""
    certs: tuple[ClientCert, ...] = ()
    problems: tuple[str, ...] = ()
    """What could not be read (an unparsable kubeconfig, a missing key), one line each."""


def deployment_selector(components: Iterable[str]) -> Selector:
    """kubehoist's Deployments of `components` (one LIST for all)."""
    return label_selector(
        equals={MANAGED_BY_LABEL: MANAGED_BY_VALUE}, within={NAME_LABEL: sorted(set(components))}
    )


def secret_name(deployment: Mapping[str, Any]) -> str | None:
    """The Secret mounted at the credentials directory of the Deployment's pods."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    by_volume = {
        v.get("name"): (v.get("secret") or {}).get("secretName")
        for v in spec.get("volumes") or []
        if isinstance(v, dict) and isinstance(v.get("secret"), dict)
    }
    for container in spec.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            name = by_volume.get(mount.get("name"))
            if mount.get("mountPath") == CREDENTIALS_DIR and name:
                return str(name)
    return None


def credentials_secret_names(
    deployments: Iterable[Mapping[str, Any]], *, components: Iterable[str]
) -> dict[str, str]:
    """component -> the credentials Secret its Deployment (named after it) mounts."""
    wanted = set(components)
    out: dict[str, str] = {}
    for dep in deployments:
        name = (dep.get("metadata") or {}).get("name")
        secret = secret_name(dep)
        if name in wanted and secret is not None:
            out[str(name)] = secret
    return out


def secret_files(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """The Secret's data, decoded (a key that does not decode is left out)."""
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            continue
    return out


def client_certs(files: Mapping[str, bytes]) -> tuple[tuple[ClientCert, ...], tuple[str, ...]]:
    """Every client certificate the kubeconfigs among `files` present, and problems."""
    certs: list[ClientCert] = []
    problems: list[str] = []
    for key, data in sorted(files.items()):
        if sniff_role(data) is not FileRole.KUBECONFIG:
            continue
        try:
            doc = kubeconfig_model.load(data, name=key)
            found = _kubeconfig_certs(key, doc, files)
        except KubehoistError as exc:
            problems.append(exc.message)
            continue
        certs.extend(found)
    return tuple(certs), tuple(problems)


def _kubeconfig_certs(
    key: str, doc: Mapping[str, Any], files: Mapping[str, bytes]
) -> list[ClientCert]:
    out = []
    for i, entry in enumerate(doc.get("users") or []):
        body = entry.get("user") or {}
        where = f"{key}: users[{i}].user"
        pem: bytes | None = None
        if isinstance(body.get("client-certificate-data"), str):
            try:
                pem = base64.b64decode(body["client-certificate-data"], validate=True)
            except (binascii.Error, ValueError):
                raise KubehoistError(f"{where}.client-certificate-data: not valid base64") from None
        elif isinstance(body.get("client-certificate"), str):
            path = body["client-certificate"]
            other = posixpath.basename(path) if posixpath.dirname(path) == CREDENTIALS_DIR else None
            if other is None or other not in files:
                raise KubehoistError(
                    f"{where}.client-certificate: {path} is not a key of the Secret"
                )
            pem = files[other]
        if pem is None:
            continue
        try:
            cert = x509.load_pem_x509_certificates(pem)[0]
        except ValueError:
            raise KubehoistError(f"{where}: client certificate does not parse") from None
        out.append(
            ClientCert(
                secret_key=key,
                user=str(entry.get("name")),
                subject=cert.subject.rfc4514_string() or "(no subject)",
                serial=f"{cert.serial_number:X}",
                not_after=cert.not_valid_after_utc,
            )
        )
    return out


def from_secret(secret: Mapping[str, Any]) -> CredentialsExpiry:
    """The client certificates in one credentials Secret (JSON as the API returns it)."""
    meta = secret.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    certs, problems = client_certs(secret_files(secret))
    return CredentialsExpiry(secret=name, certs=certs, problems=problems)


def to_dict(found: CredentialsExpiry, *, now: datetime) -> dict[str, Any]:
    """The machine form (`status -o json`): no key material, dates in RFC 3339."""
    return {
        "secret": found.secret,
        "certificates": [
            {
                "secretKey": c.secret_key,
                "user": c.user,
                "subject": c.subject,
                "serialNumber": c.serial,
                "notAfter": c.not_after.isoformat().replace("+00:00", "Z"),
                "daysLeft": c.days_left(now),
                "level": c.level(now),
            }
            for c in found.certs
        ],
        "problems": list(found.problems),
    }
