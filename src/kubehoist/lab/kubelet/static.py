"""Static pods: reading a node's manifest directory and the mirror pods that make
them visible in the API, as the kubelet's file source and mirror client do.

Every `*.yaml`, `*.yml` or `*.json` file in `<node-root>/etc/kubernetes/manifests`
(hidden files ignored) is one pod named `<name>-<node>`. Its UID is a hash of the
file's content and the node name, so that any change of the file is a new pod
(stop the old, start the new), and that hash is what the mirror pod carries in its
`kubernetes.io/config.mirror` annotation. The mirror pod is owned by the Node.
Pure except `scan`, which reads the directory.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubehoist.lab.kubelet.podspec import (
    HASH_ANNOTATION,
    MIRROR_ANNOTATION,
    SEEN_ANNOTATION,
    SOURCE_ANNOTATION,
    PodSpec,
    PodSpecError,
    parse_pod,
)
from kubehoist.lab.kubelet.status import now, timestamp

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class StaticPod:
    path: Path
    uid: str  # the config hash
    spec: PodSpec
    manifest: Mapping[str, Any]  # the pod as written, with name/namespace/nodeName set


@dataclass(frozen=True)
class ManifestError:
    path: Path
    message: str


def config_hash(content: bytes, node_name: str) -> str:
    return hashlib.md5(content + b"\x00" + node_name.encode(), usedforsecurity=False).hexdigest()


def parse_manifest(path: Path, content: bytes, node_name: str) -> StaticPod:
    try:
        obj = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise PodSpecError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("kind") != "Pod":
        raise PodSpecError(f"{path}: not a Pod manifest")
    pod = copy.deepcopy(obj)
    meta = pod.setdefault("metadata", {}) or {}
    pod["metadata"] = meta
    if not meta.get("name"):
        raise PodSpecError(f"{path}: no metadata.name")
    meta["name"] = f"{meta['name']}-{node_name}"
    meta["namespace"] = meta.get("namespace") or "default"
    uid = str(meta.get("uid") or config_hash(content, node_name))
    spec = pod.setdefault("spec", {}) or {}
    pod["spec"] = spec
    spec["nodeName"] = node_name
    pod.pop("status", None)
    return StaticPod(
        path=path, uid=uid, spec=parse_pod(pod, node_name=node_name, uid=uid), manifest=pod
    )


def scan(directory: Path, node_name: str) -> tuple[list[StaticPod], list[ManifestError]]:
    """Every static pod of the directory; unreadable manifests are reported apart.
    When two files define the same pod name, the first (by file name) wins."""
    pods: list[StaticPod] = []
    errors: list[ManifestError] = []
    names: set[str] = set()
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return [], []
    for path in entries:
        if path.name.startswith(".") or path.suffix not in SUFFIXES or not path.is_file():
            continue
        try:
            sp = parse_manifest(path, path.read_bytes(), node_name)
        except (OSError, PodSpecError, ValueError, KeyError, TypeError) as exc:
            errors.append(ManifestError(path, str(exc)))
            continue
        if sp.spec.key in names:
            errors.append(ManifestError(path, f"duplicate static pod {sp.spec.key}"))
            continue
        names.add(sp.spec.key)
        pods.append(sp)
    return pods, errors


def mirror_pod(static: StaticPod, *, node_name: str, node_uid: str) -> dict[str, Any]:
    """The mirror pod to create for a static pod."""
    pod = copy.deepcopy(dict(static.manifest))
    pod["apiVersion"] = "v1"
    pod["kind"] = "Pod"
    meta = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.update(
        {
            MIRROR_ANNOTATION: static.uid,
            HASH_ANNOTATION: static.uid,
            SOURCE_ANNOTATION: "file",
            SEEN_ANNOTATION: timestamp(now()),
        }
    )
    meta["annotations"] = annotations
    meta["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node_name,
            "uid": node_uid,
            "controller": True,
        }
    ]
    return pod


def is_mirror(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return MIRROR_ANNOTATION in annotations


def mirror_hash(pod: Mapping[str, Any]) -> str:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(MIRROR_ANNOTATION, ""))
