"""A live mirror pod -> the static pod manifest it mirrors; kubeadm's endpoint. Pure.

`render --from-cluster` reads the mirror pod `<component>-<node>` that the kubelet
posts for a static pod. That object is the manifest plus what the API server and the
kubelet added: status, identity (uid, resourceVersion, ownerReferences to the Node,
managedFields), the kubelet's `kubernetes.io/config.*` annotations, `nodeName`,
admission's priority and not-ready/unreachable tolerations, and the defaults of every
field left out. `manifest_from_mirror_pod` strips them, so that rendering the live pod
gives the same Deployment as rendering the manifest file it came from.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from kubehoist.constants import MIRROR_ANNOTATION as MIRROR_ANNOTATION
from kubehoist.errors import KubehoistError
from kubehoist.manifest import StaticPod, static_pod_from_dict

KUBELET_ANNOTATION_PREFIX: Final = "kubernetes.io/config."
DEFAULT_API_PORT: Final = 6443

_METADATA_KEEP = ("name", "namespace", "labels", "annotations")

# Pod spec fields the API server (defaults, admission) or the kubelet (nodeName) fills
# in, with the value that means "not written in the manifest".
_POD_DEFAULTS: Final[Mapping[str, Any]] = {
    "dnsPolicy": "ClusterFirst",
    "enableServiceLinks": True,
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "terminationGracePeriodSeconds": 30,
    "securityContext": {},
    "preemptionPolicy": "PreemptLowerPriority",
}
_POD_SET_BY_SERVER = ("nodeName", "priority")
_CONTAINER_DEFAULTS: Final[Mapping[str, Any]] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
# DefaultTolerationSeconds admission adds these to every pod that lacks them.
_ADMISSION_TOLERATIONS: Final = tuple(
    {
        "key": key,
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
)


def is_mirror_pod(doc: Mapping[str, Any]) -> bool:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, Mapping) and MIRROR_ANNOTATION in annotations


def manifest_from_mirror_pod(doc: Mapping[str, Any], *, node: str | None = None) -> dict[str, Any]:
    """The static pod manifest a mirror pod mirrors (as far as it can be told apart)."""
    pod: dict[str, Any] = copy.deepcopy(dict(doc))
    pod.pop("status", None)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    metadata = pod.get("metadata")
    if isinstance(metadata, dict):
        meta = {k: metadata[k] for k in _METADATA_KEEP if k in metadata}
        annotations = {
            k: v
            for k, v in (meta.pop("annotations", None) or {}).items()
            if not str(k).startswith(KUBELET_ANNOTATION_PREFIX)
        }
        if annotations:
            meta["annotations"] = annotations
        name = meta.get("name")
        node = node or _spec_node(pod)
        if isinstance(name, str) and node and name.endswith(f"-{node}"):
            meta["name"] = name[: -len(node) - 1]  # the kubelet appends "-<node>"
        pod["metadata"] = meta
    spec = pod.get("spec")
    if isinstance(spec, dict):
        _strip_pod_spec(spec)
    return pod


def _spec_node(pod: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return node if isinstance(node, str) else None


def _drop_defaults(obj: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if key in obj and obj[key] == value:
            del obj[key]


def _strip_pod_spec(spec: dict[str, Any]) -> None:
    for key in _POD_SET_BY_SERVER:
        spec.pop(key, None)
    _drop_defaults(spec, _POD_DEFAULTS)
    tolerations = spec.get("tolerations")
    if isinstance(tolerations, list):
        kept = [t for t in tolerations if t not in _ADMISSION_TOLERATIONS]
        if kept:
            spec["tolerations"] = kept
        else:
            spec.pop("tolerations")
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _strip_container(container)
    for volume in spec.get("volumes") or []:
        host_path = volume.get("hostPath") if isinstance(volume, dict) else None
        if isinstance(host_path, dict) and host_path.get("type") == "":
            del host_path["type"]


def _strip_container(container: dict[str, Any]) -> None:
    _drop_defaults(container, _CONTAINER_DEFAULTS)
    for key in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(key)
        if isinstance(probe, dict):
            _drop_defaults(probe, {"successThreshold": 1})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            _drop_defaults(port, {"protocol": "TCP"})
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(field_ref, dict):
            _drop_defaults(field_ref, {"apiVersion": "v1"})


def canonical_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of a document's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def static_pod_from_mirror_pod(doc: Mapping[str, Any], *, node: str | None = None) -> StaticPod:
    """The StaticPod of a live mirror pod; errors name it as `pod/<name>`."""
    name = (doc.get("metadata") or {}).get("name") or "?"
    manifest = manifest_from_mirror_pod(doc, node=node)
    return static_pod_from_dict(manifest, source=f"pod/{name}", sha256=canonical_sha256(manifest))


def command_of(pod: StaticPod) -> tuple[str, ...]:
    """The component container's image, command and args (to compare nodes' pods)."""
    c = pod.container
    return (pod.image, *(c.get("command") or ()), "--", *(c.get("args") or ()))


def control_plane_endpoint(cluster_configuration: str, *, source: str) -> str | None:
    """`https://host:port` of kubeadm's ClusterConfiguration.controlPlaneEndpoint.

    None when it is not set (a single-node kubeadm cluster without an endpoint); a
    one-line error when the configuration does not parse. kubeadm appends the API
    server's bind port (6443 unless changed) to an endpoint without a port.
    """
    try:
        doc = yaml.safe_load(cluster_configuration)
    except yaml.YAMLError:
        raise KubehoistError(f"{source}: not YAML") from None
    if not isinstance(doc, Mapping):
        raise KubehoistError(f"{source}: expected a ClusterConfiguration mapping")
    endpoint = doc.get("controlPlaneEndpoint")
    if endpoint in (None, ""):
        return None
    if not isinstance(endpoint, str):
        raise KubehoistError(f"{source}: controlPlaneEndpoint: expected host:port")
    url = endpoint if "://" in endpoint else f"https://{endpoint}"
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        raise KubehoistError(
            f"{source}: controlPlaneEndpoint: {endpoint!r} is not host:port"
        ) from None
    if not split.hostname:
        raise KubehoistError(f"{source}: controlPlaneEndpoint: {endpoint!r} has no host")
    host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
    return f"https://{host}:{port or DEFAULT_API_PORT}"
