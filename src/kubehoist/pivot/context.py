"""What the phases of pivot, rollback and upgrade run on (`Context`), and the cluster
reads and writes they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import Client, codecs
from lightkube.resources.core_v1 import Node, Pod

from kubehoist.components import Component
from kubehoist.constants import FIELD_MANAGER, selector_labels
from kubehoist.kube.client import get_or_none
from kubehoist.kube.objects import is_ready
from kubehoist.manifest import StaticPod
from kubehoist.nodefiles.parking import NodeFiles
from kubehoist.pivot import state as statemod
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Progress
from kubehoist.render import Rendered

NAMESPACE = "kube-system"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclass(kw_only=True)
class Context:
    client: Client
    component: Component
    pod: StaticPod | None
    rendered: Rendered | None
    files: NodeFiles
    filename: str
    progress: Progress
    state: PivotState
    timeout: float = 180
    nodes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    park_all: Any = None  # optional callable(nodes, filename) -> dict[node, ParkResult]
    # retired nodes whose runtime showed the pod stopped (parking.STOPPED)
    stopped: set[str] = field(default_factory=set)
    unpark_all: Any = None

    @property
    def lease_name(self) -> str:
        return self.component.lease_name

    @property
    def lease_namespace(self) -> str:
        return self.component.lease_namespace

    def save(self) -> None:
        self.state = statemod.save(self.client, self.state)


# --- cluster reads -----------------------------------------------------------------------
def control_plane_nodes(client: Client) -> list[str]:
    nodes = client.list(Node, labels={CONTROL_PLANE_LABEL: None})
    return sorted(n.metadata.name for n in nodes if n.metadata and n.metadata.name)


def mirror_pod(client: Client, component: str, node: str) -> Pod | None:
    return get_or_none(client, Pod, f"{component}-{node}", namespace=NAMESPACE)


def deployment_pods(client: Client, component: str, *, terminating: bool = False) -> list[Pod]:
    """The Deployment's pods; those being deleted too when `terminating`."""
    labels: dict[str, Any] = dict(selector_labels(component))
    return [
        p
        for p in client.list(Pod, namespace=NAMESPACE, labels=labels)
        if terminating or (p.metadata and p.metadata.deletionTimestamp is None)
    ]


def pod_ready(pod: Pod) -> bool:
    return is_ready(pod)


def name_of(obj: Any) -> str:
    return str(obj.metadata.name) if obj.metadata and obj.metadata.name else "?"


def objects_of(rendered: Rendered | None, kinds: Sequence[str]) -> list[Mapping[str, Any]]:
    if rendered is None:
        return []
    return [o for o in rendered.objects if o.get("kind") in kinds]


def apply_objects(client: Client, objs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Server-side apply each object as kubehoist's field manager (pivot, refresh)."""
    done = []
    for obj in objs:
        res = codecs.from_dict(dict(obj))
        client.apply(res, field_manager=FIELD_MANAGER, force=True)
        done.append(
            f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        )
    return done


def describe(objs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for o in objs:
        meta = o["metadata"]
        extra = ""
        if o["kind"] == "Secret":
            extra = f" ({len(o.get('data', {}))} keys: {', '.join(sorted(o.get('data', {})))})"
        out.append(
            f"server-side apply {o['kind']} {meta.get('namespace', '')}/{meta['name']}{extra}"
        )
    return out
