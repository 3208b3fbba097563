"""A component config file (kube-scheduler's `--config`): checked, its files found, rewritten.

A `KubeSchedulerConfiguration` names its kubeconfig (`clientConnection.kubeconfig`,
relative to the file's directory) and may name other files by absolute path (an
extender's `tlsConfig.certFile`/`keyFile`/`caFile`, ...). The kubeconfig travels as a
kubeconfig; every other string that is an absolute path on a hostPath volume of the
static pod travels as a found file (`FileRole.FOUND`), like a file an unknown flag
names. The rewritten file names the carried copies.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from kubehoist.components import Component, FileRole
from kubehoist.errors import KubehoistError
from kubehoist.manifest import StaticPod
from kubehoist.render.needs import FileNeed
from kubehoist.safeyaml import load_document


def load(component: Component, need: FileNeed, data: bytes) -> dict[str, Any]:
    """The config as a mapping of the component's config kind, or a one-line error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KubehoistError(f"{need.label}: not UTF-8 text") from None
    doc = load_document(text, source=need.path, what=component.config_kind or "component config")
    if not isinstance(doc, dict):
        raise KubehoistError(f"{need.path}: expected a mapping")
    if component.config_kind is not None:
        kind = doc.get("kind")
        if kind != component.config_kind:
            raise KubehoistError(
                f"{need.path}: kind: expected {component.config_kind}, got {kind!r}"
            )
        api_version = doc.get("apiVersion")
        group = api_version.split("/")[0] if isinstance(api_version, str) else None
        if group != component.config_group:
            raise KubehoistError(
                f"{need.path}: apiVersion: expected {component.config_group}/<version>, "
                f"got {api_version!r}"
            )
    return doc


def kubeconfig_path(component: Component, need: FileNeed, doc: Mapping[str, Any]) -> str | None:
    """The kubeconfig the config names (absolute, normalised), or None."""
    node: Any = doc
    for key in component.config_kubeconfig_field:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(need.path), node))


def _strings(node: Any, field: str = "") -> Iterator[tuple[str, str]]:
    """(field, value) of every string in the document (iteratively: no recursion)."""
    stack: list[tuple[Any, str]] = [(node, field)]
    while stack:
        node, field = stack.pop()
        if isinstance(node, str):
            yield field, node
        elif isinstance(node, dict):
            stack.extend((v, f"{field}.{k}" if field else str(k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{field}[{i}]") for i, v in enumerate(node))


def referenced(pod: StaticPod, need: FileNeed, data: bytes) -> tuple[FileNeed, ...]:
    """The kubeconfig, then every other file on a hostPath volume, the config names."""
    component = pod.component
    doc = load(component, need, data)
    out: list[FileNeed] = []
    target = kubeconfig_path(component, need, doc)
    kubeconfig_field = ".".join(component.config_kubeconfig_field)
    if target is not None:
        host = pod.locate(target)
        if host is not None and host.host_path is not None:
            out.append(
                FileNeed(
                    path=target,
                    role=FileRole.KUBECONFIG,
                    label=f"{target} ({need.path}: {kubeconfig_field})",
                    where=f"{need.path}: {kubeconfig_field}",
                    host=host,
                    flag=need.flag,
                )
            )
    for field, value in sorted(_strings(doc)):
        if field == kubeconfig_field or not value.startswith("/") or len(value) < 2:
            continue
        path = posixpath.normpath(value)
        host = pod.locate(path)
        if host is None or host.host_path is None:
            continue
        out.append(
            FileNeed(
                path=path,
                role=FileRole.FOUND,
                label=f"{path} ({need.path}: {field})",
                where=f"{need.path}: {field}",
                host=host,
                flag=need.flag,
            )
        )
    return tuple(out)


def rewrite(pod: StaticPod, need: FileNeed, data: bytes, mounted: Mapping[str, str]) -> bytes:
    """The config naming the carried copies of the files it names (as is if none)."""
    component = pod.component
    doc = load(component, need, data)
    changed = False
    target = kubeconfig_path(component, need, doc)
    fields = component.config_kubeconfig_field
    if target is not None and target in mounted:
        node: Any = doc
        for key in fields[:-1]:
            node = node[key]
        node[fields[-1]] = mounted[target]
        changed = True
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(pairs):
            if isinstance(value, str) and value.startswith("/"):
                carried = mounted.get(posixpath.normpath(value))
                if carried is not None and carried != value:
                    node[key] = carried
                    changed = True
            elif isinstance(value, dict | list):
                stack.append(value)
    if not changed:
        return data
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).encode()
