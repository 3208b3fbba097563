"""Kubeconfigs the component reads: validated, their files found, paths and server rewritten.

kubeadm writes `controller-manager.conf` and `scheduler.conf` pointing at the node's own
advertise address, which is fine for a static pod and wrong for a Deployment pod that
must keep working when that node is lost. Render rewrites the server to `--server`, or
to the cluster's load-balanced endpoint (kubeadm's controlPlaneEndpoint, as
admin.conf shows it), and always says which endpoint the pods will use.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from kubehoist.components import FileRole
from kubehoist.errors import KubehoistError
from kubehoist.manifest import load_yaml_document


@dataclass(frozen=True, kw_only=True)
class FileField:
    """A file a kubeconfig names, and where it names it."""

    field: str
    path: str
    """Absolute (resolved against the kubeconfig's directory)."""
    role: FileRole


@dataclass(frozen=True, kw_only=True)
class EmbeddedData:
    """PEM data embedded in a kubeconfig (`*-data` fields), base64-decoded."""

    field: str
    data: bytes
    role: FileRole


_CLUSTER_FILES = {"certificate-authority": FileRole.CERT}
_USER_FILES = {
    "client-certificate": FileRole.CERT,
    "client-key": FileRole.KEY,
    "tokenFile": FileRole.OPAQUE,
}
_CLUSTER_DATA = {"certificate-authority-data": FileRole.CERT}
_USER_DATA = {"client-certificate-data": FileRole.CERT, "client-key-data": FileRole.KEY}


def load(data: bytes, *, name: str) -> dict[str, Any]:
    """A kubeconfig as a dict, checked enough that a component could use it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KubehoistError(f"{name}: not a kubeconfig (not UTF-8 text)") from None
    doc = load_yaml_document(text, source=name, what="kubeconfig")
    if not isinstance(doc, dict):
        raise KubehoistError(f"{name}: not a kubeconfig (expected a mapping)")
    kind = doc.get("kind", "Config")
    if kind != "Config":
        raise KubehoistError(f"{name}: kind: expected Config, got {kind!r}")
    clusters = _entries(doc, "clusters", "cluster", name=name)
    if not clusters:
        raise KubehoistError(f"{name}: clusters: no cluster")
    for i, (_, cluster) in enumerate(clusters):
        server = cluster.get("server")
        if not isinstance(server, str) or not server:
            raise KubehoistError(f"{name}: clusters[{i}].cluster.server: missing")
        split = urlsplit(server)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise KubehoistError(
                f"{name}: clusters[{i}].cluster.server: {server!r} is not an http(s) URL"
            )
    _entries(doc, "users", "user", name=name)
    contexts = _entries(doc, "contexts", "context", name=name)
    current = doc.get("current-context")
    if current:
        names = [n for n, _ in contexts]
        if current not in names:
            raise KubehoistError(f"{name}: current-context: {current!r} is not in contexts")
    return doc


def _entries(
    doc: Mapping[str, Any], key: str, inner: str, *, name: str
) -> list[tuple[str, dict[str, Any]]]:
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise KubehoistError(f"{name}: {key}: expected a list")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise KubehoistError(f"{name}: {key}[{i}]: expected a mapping")
        entry_name = entry.get("name")
        if not isinstance(entry_name, str) or not entry_name:
            raise KubehoistError(f"{name}: {key}[{i}].name: missing")
        body = entry.get(inner)
        if not isinstance(body, dict):
            raise KubehoistError(f"{name}: {key}[{i}].{inner}: expected a mapping")
        out.append((entry_name, body))
    return out


def file_fields(doc: Mapping[str, Any], *, path: str) -> tuple[FileField, ...]:
    """Files the kubeconfig at container path `path` names (relative to its directory)."""
    base = posixpath.dirname(path)
    out: list[FileField] = []
    for key, inner, table in (
        ("clusters", "cluster", _CLUSTER_FILES),
        ("users", "user", _USER_FILES),
    ):
        for i, entry in enumerate(doc.get(key) or []):
            body = entry.get(inner) or {}
            for fld, role in table.items():
                value = body.get(fld)
                if isinstance(value, str) and value:
                    resolved = posixpath.normpath(posixpath.join(base, value))
                    out.append(
                        FileField(field=f"{key}[{i}].{inner}.{fld}", path=resolved, role=role)
                    )
    return tuple(out)


def embedded_data(doc: Mapping[str, Any], *, name: str) -> tuple[EmbeddedData, ...]:
    """The PEM blobs embedded in the kubeconfig, decoded."""
    out: list[EmbeddedData] = []
    for key, inner, table in (
        ("clusters", "cluster", _CLUSTER_DATA),
        ("users", "user", _USER_DATA),
    ):
        for i, entry in enumerate(doc.get(key) or []):
            body = entry.get(inner) or {}
            for fld, role in table.items():
                value = body.get(fld)
                if value is None:
                    continue
                where = f"{key}[{i}].{inner}.{fld}"
                if not isinstance(value, str):
                    raise KubehoistError(f"{name}: {where}: expected base64 text")
                try:
                    data = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise KubehoistError(f"{name}: {where}: not valid base64") from None
                out.append(EmbeddedData(field=where, data=data, role=role))
    return tuple(out)


def servers(doc: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(e["cluster"]["server"]) for e in doc.get("clusters") or [])


def current_server(doc: Mapping[str, Any]) -> str | None:
    """The server of the current context (or of the only cluster)."""
    clusters = {e.get("name"): e.get("cluster") or {} for e in doc.get("clusters") or []}
    contexts = {e.get("name"): e.get("context") or {} for e in doc.get("contexts") or []}
    current = doc.get("current-context")
    if current in contexts:
        cluster = clusters.get(contexts[current].get("cluster"))
        if cluster and isinstance(cluster.get("server"), str):
            return str(cluster["server"])
    if len(clusters) == 1:
        only = next(iter(clusters.values()))
        return str(only.get("server")) if only.get("server") else None
    return None


def is_loopback(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rewrite(
    doc: Mapping[str, Any], *, paths: Mapping[str, str], base: str, server: str | None
) -> bytes:
    """The kubeconfig with file references remapped and, if given, every server replaced."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(doc)))  # deep copy, plain types
    for key, inner, table in (
        ("clusters", "cluster", _CLUSTER_FILES),
        ("users", "user", _USER_FILES),
    ):
        for entry in out.get(key) or []:
            body = entry.get(inner) or {}
            for fld in table:
                value = body.get(fld)
                if isinstance(value, str) and value:
                    resolved = posixpath.normpath(posixpath.join(base, value))
                    if resolved in paths:
                        body[fld] = paths[resolved]
            if key == "clusters" and server is not None:
                body["server"] = server
    return yaml.safe_dump(out, sort_keys=True, default_flow_style=False).encode()
