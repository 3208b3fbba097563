"""Reads of a kubeadm control plane for `render --from-cluster`.

`read_static_pod` finds the mirror pod `<component>-<node>` of a static pod (on the
node asked for, or on the first control-plane node, by name, that has one) and turns
it into a `StaticPod` (`kubehoist.livepod`). `read_control_plane_endpoint` reads
kubeadm's controlPlaneEndpoint from the `kube-system/kubeadm-config` ConfigMap.
Every failure is a one-line `KubehoistError` (`kube.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from lightkube import Client
from lightkube.resources.core_v1 import ConfigMap, Node, Pod

from kubehoist import livepod
from kubehoist.errors import KubehoistError
from kubehoist.kube.errors import Call, ForbiddenError, NotFoundError, api_errors
from kubehoist.manifest import StaticPod

NAMESPACE: Final = "kube-system"
CONTROL_PLANE_LABEL: Final = "node-role.kubernetes.io/control-plane"
KUBEADM_CONFIG: Final = "kubeadm-config"
CLUSTER_CONFIGURATION_KEY: Final = "ClusterConfiguration"


@dataclass(frozen=True, kw_only=True)
class LiveStaticPod:
    pod: StaticPod
    node: str
    warnings: tuple[str, ...] = ()


def _get_pod(client: Client, name: str, *, server: str) -> dict[str, Any] | None:
    call = Call(verb="get", resource="pods", namespace=NAMESPACE, name=name)
    try:
        with api_errors(call, server=server):
            found = client.get(Pod, name, namespace=NAMESPACE)
    except NotFoundError:
        return None
    return found.to_dict()


def _control_plane_nodes(client: Client, *, server: str) -> list[str]:
    with api_errors(Call(verb="list", resource="nodes"), server=server):
        nodes = client.list(Node, labels={CONTROL_PLANE_LABEL: None})
        names = [n.metadata.name for n in nodes if n.metadata and n.metadata.name]
    return sorted(names)


def _static_pod(doc: dict[str, Any], *, name: str, node: str) -> StaticPod:
    if not livepod.is_mirror_pod(doc):
        raise KubehoistError(
            f"pod/{name}: not a mirror pod (no {livepod.MIRROR_ANNOTATION} annotation): "
            "it is not the static pod of a control-plane node"
        )
    return livepod.static_pod_from_mirror_pod(doc, node=node)


def read_static_pod(
    client: Client, *, component: str, node: str | None, server: str
) -> LiveStaticPod:
    """The static pod `component` of `node` (default: the first control-plane node
    that runs one), with a warning when other control-plane nodes run another."""
    if node is not None:
        name = f"{component}-{node}"
        doc = _get_pod(client, name, server=server)
        if doc is None:
            raise KubehoistError(
                f"pod/{name} not found in {NAMESPACE}: node {node} runs no static {component} "
                "(is it a control-plane node? has the component been pivoted already?)"
            )
        return LiveStaticPod(pod=_static_pod(doc, name=name, node=node), node=node)

    nodes = _control_plane_nodes(client, server=server)
    if not nodes:
        raise KubehoistError(
            f"no node has the label {CONTROL_PLANE_LABEL}; pass --node with the "
            f"control-plane node whose static {component} to read"
        )
    found: list[tuple[str, StaticPod]] = []
    for candidate in nodes:
        name = f"{component}-{candidate}"
        doc = _get_pod(client, name, server=server)
        if doc is not None:
            found.append((candidate, _static_pod(doc, name=name, node=candidate)))
    if not found:
        mirrors = ", ".join(f"{component}-{n}" for n in nodes)
        raise KubehoistError(
            f"no control-plane node runs a static {component} (mirror pods {mirrors} not "
            f"found in {NAMESPACE}): has it been pivoted already?"
        )
    first_node, first = found[0]
    warnings: list[str] = []
    base = livepod.command_of(first)
    for other_node, other in found[1:]:
        theirs = livepod.command_of(other)
        if theirs != base:
            diff = " ".join(t for t in theirs if t not in base) or "(order or removed flags)"
            warnings.append(
                f"the static {component} on {other_node} differs from {first_node}'s "
                f"({diff}); rendering {first_node}'s (pass --node to choose)"
            )
    return LiveStaticPod(pod=first, node=first_node, warnings=tuple(warnings))


def read_control_plane_endpoint(
    client: Client, *, server: str
) -> tuple[str | None, str, tuple[str, ...]]:
    """(endpoint or None, where it was read, warnings) from kubeadm's ConfigMap."""
    source = f"configmap {NAMESPACE}/{KUBEADM_CONFIG}"
    call = Call(verb="get", resource="configmaps", namespace=NAMESPACE, name=KUBEADM_CONFIG)
    try:
        with api_errors(call, server=server):
            cm = client.get(ConfigMap, KUBEADM_CONFIG, namespace=NAMESPACE)
    except (NotFoundError, ForbiddenError) as exc:
        return None, source, (f"no controlPlaneEndpoint from the cluster: {exc.message}",)
    text = (cm.data or {}).get(CLUSTER_CONFIGURATION_KEY)
    where = f"{source} {CLUSTER_CONFIGURATION_KEY}"
    if not text:
        return None, source, (f"{source} has no {CLUSTER_CONFIGURATION_KEY}",)
    endpoint = livepod.control_plane_endpoint(text, source=where)
    if endpoint is None:
        return None, where, (f"{where} sets no controlPlaneEndpoint",)
    return endpoint, f"{where}.controlPlaneEndpoint", ()
