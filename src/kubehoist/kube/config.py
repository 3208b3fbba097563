"""Which API server and which credentials: the kubeconfig, chosen the way kubectl does.

Owns the precedence rules only (no network): `--kubeconfig` names one file that must
exist; otherwise `KUBECONFIG` is a list of files merged like kubectl merges them (the
first file to define a cluster, user or context wins, and the first non-empty
`current-context` wins; missing files are skipped); otherwise `~/.kube/config`;
otherwise, inside a pod, the service account. `--context` picks a context by name.

Relative paths inside a file (certificate-authority, client-certificate, client-key,
tokenFile) are resolved against that file's directory before merging, because after
the merge lightkube only knows one file name.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml
from cryptography import x509
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from kubehoist.errors import KubehoistError

DEFAULT_KUBECONFIG: Final = Path("~/.kube/config")
_SECTIONS: Final = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
_PATH_FIELDS: Final = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


def load_config(
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SingleConfig:
    """The cluster, user and context to use, or a `KubehoistError` naming what is wrong."""
    env = os.environ if environ is None else environ
    if kubeconfig is not None:
        files = [Path(kubeconfig).expanduser()]
        if not files[0].is_file():
            raise KubehoistError(f"kubeconfig {kubeconfig}: no such file")
    elif env.get("KUBECONFIG"):
        listed = [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
        files = [p for p in listed if p.is_file()]
        if not files:
            raise KubehoistError(f"KUBECONFIG={env['KUBECONFIG']}: none of its files exist")
    else:
        default = DEFAULT_KUBECONFIG.expanduser()
        if not default.is_file():
            return _in_cluster(context=context, environ=env)
        files = [default]
    merged = merge_kubeconfigs([(f, _read(f)) for f in files])
    try:
        config = KubeConfig.from_dict(merged, fname=files[0]).get(context_name=context)
    except ConfigError as exc:
        if context is not None and context not in merged_names(merged, "contexts"):
            raise KubehoistError(f'context "{context}" does not exist') from None
        raise KubehoistError(f"kubeconfig: {exc}") from None
    except KeyError as exc:
        raise KubehoistError(
            f"kubeconfig: the context refers to {exc} which is not defined"
        ) from None
    if config is None:  # pragma: no cover - only with a default, which we never pass
        raise KubehoistError("kubeconfig: no current context")
    check_client_certificate(config, where=", ".join(str(f) for f in files))
    return config


NOT_BEFORE_SLACK: Final = timedelta(minutes=1)
"""A certificate issued a moment ago by a host whose clock is slightly ahead is fine."""


def check_client_certificate(
    config: SingleConfig, *, where: str, now: datetime | None = None
) -> None:
    """Refuse, in one line naming the kubeconfig and the user, a client certificate that
    has expired or is not valid yet: the API server would answer 401 Unauthorized and
    say no more (kubeadm's certificates last a year). A certificate that cannot be read
    here is left to the TLS layer, which names it."""
    user = config.user
    if user is None:
        return
    pem: bytes | None = None
    if user.client_cert_data:
        try:
            pem = base64.b64decode(user.client_cert_data, validate=False)
        except ValueError:
            return
    elif user.client_cert:
        try:
            pem = Path(str(config.abs_file(user.client_cert))).read_bytes()
        except OSError:
            return
    if not pem:
        return
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return
    now = now or datetime.now(UTC)
    name = config.context.user
    if now > cert.not_valid_after_utc:
        raise KubehoistError(
            f'kubeconfig {where}: user "{name}": client certificate expired on '
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (renew it: kubeadm certs renew)"
        )
    if now + NOT_BEFORE_SLACK < cert.not_valid_before_utc:
        raise KubehoistError(
            f'kubeconfig {where}: user "{name}": client certificate is not valid before '
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check this machine's clock)"
        )


def merged_names(merged: Mapping[str, Any], section: str) -> set[str]:
    return {str(entry.get("name")) for entry in merged.get(section) or ()}


def merge_kubeconfigs(documents: list[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """kubectl's merge: first definition of each name wins, first current-context wins."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {section: set() for section, _ in _SECTIONS}
    for path, doc in documents:
        if not merged.get("current-context") and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section, key in _SECTIONS:
            for entry in doc.get(section) or ():
                name = entry.get("name")
                if not isinstance(name, str) or name in seen[section]:
                    continue
                seen[section].add(name)
                body = dict(entry.get(key) or {})
                for field in _PATH_FIELDS.get(key, ()):
                    value = body.get(field)
                    if isinstance(value, str) and value and not Path(value).is_absolute():
                        body[field] = str(path.parent / value)
                merged[section].append({"name": name, key: body})
    return merged


def _read(path: Path) -> Mapping[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubehoistError(f"kubeconfig {path}: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise KubehoistError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    return doc


def _in_cluster(*, context: str | None, environ: Mapping[str, str]) -> SingleConfig:
    if not environ.get("KUBERNETES_SERVICE_HOST"):
        raise KubehoistError(
            f"no kubeconfig: {DEFAULT_KUBECONFIG} does not exist and KUBECONFIG is not set "
            "(use --kubeconfig)"
        )
    try:
        config = KubeConfig.from_service_account().get(context_name=context)
    except (ConfigError, KeyError) as exc:
        raise KubehoistError(f"in-cluster config: {exc}") from None
    if config is None:  # pragma: no cover
        raise KubehoistError("in-cluster config: no context")
    return config
