"""Checks of the certificates and keys render carries: they parse, and they are in date.

An expired certificate is an error (the pods would fail in a way that is hard to
see); one that expires within the warning window is a warning. The time is passed
in, so the check is pure and repeatable.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from kubehoist.errors import KubehoistError


def check_certificates(
    data: bytes, *, label: str, now: datetime, warn_within: timedelta
) -> tuple[str, ...]:
    """Warnings for PEM certificate(s) in `data`; KubehoistError if none parse or one expired."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise KubehoistError(f"{label}: not a PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KubehoistError(f"{label}: certificate does not parse: {_short(exc)}") from None
    warnings: list[str] = []
    for cert in certs:
        subject = cert.subject.rfc4514_string() or "(no subject)"
        expires = cert.not_valid_after_utc
        if expires <= now:
            raise KubehoistError(
                f"{label}: certificate {subject} expired on {expires:%Y-%m-%d %H:%M} UTC"
            )
        if expires - now <= warn_within:
            days = (expires - now).days
            warnings.append(
                f"{label}: certificate {subject} expires in {days} days "
                f"({expires:%Y-%m-%d}); renew it (kubeadm certs renew) and render again"
            )
    return tuple(warnings)


def check_private_key(data: bytes, *, label: str) -> None:
    """KubehoistError unless `data` is an unencrypted PEM private key."""
    try:
        serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        raise KubehoistError(f"{label}: private key is encrypted") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KubehoistError(f"{label}: not a PEM private key: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__
