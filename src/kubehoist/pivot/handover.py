"""The fast hand-over: make sure the Lease's holder is certainly dead, then release
the Lease so a standby takes it at its next retry instead of after the lease duration.

"Certainly dead" (never weaker): for a static pod holder, its manifest is gone from
the node and the node's container runtime shows the pod's sandboxes stopped (read
there right after the park, parking.STOPPED), or the kubelet reports the container
terminated, or has deleted the mirror pod (the kubelet deletes a mirror pod only once
its static pod has fully terminated);
for a Deployment pod holder, the pod object is gone (deletion completes only once its
kubelet confirmed the containers stopped) or its container terminated or was replaced.
A node that stops answering is never taken as proof.

The release (kube/leases.py) is an update with the Lease's resourceVersion: if anyone
wrote the Lease in between, nothing is released.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightkube import Client
from lightkube.resources.core_v1 import Pod

from kubehoist.kube.client import get_or_none
from kubehoist.kube.leases import holder_node, read_lease, release, wait_until


def _mirror_pod(component: str, node: str) -> str:
    return f"{component}-{node}"


def static_pod_stopped(mirror: Pod | None) -> bool:
    """PURE: whether a static pod whose manifest was removed from its node has certainly
    stopped, given its mirror pod as last read (None: deleted). The kubelet deletes the
    mirror pod only after the pod has fully terminated, and before that posts every
    container terminated (measured on the real kubelet: tests/e2e/test_certainly_dead.py)."""
    if mirror is None:
        return True
    statuses = (mirror.status.containerStatuses if mirror.status else None) or []
    return bool(statuses) and all(
        cs.state is not None and cs.state.terminated is not None for cs in statuses
    )


def static_pod_dead(client: Client, *, component: str, node: str, namespace: str) -> bool:
    """Whether the static pod of `component` on `node` has certainly stopped, given that
    its manifest was removed from the node."""
    return static_pod_stopped(
        get_or_none(client, Pod, _mirror_pod(component, node), namespace=namespace)
    )


def hand_over_from_static(
    client: Client,
    *,
    component: str,
    lease_namespace: str,
    lease_name: str,
    retired_nodes: set[str],
    stopped_nodes: Iterable[str] = (),
    timeout: float = 60,
) -> str:
    """After the static pods of `retired_nodes` were retired: once the holder (if it is
    one of them) is certainly dead, release the Lease. Returns what was done.
    `stopped_nodes`: retired nodes whose container runtime showed the pod stopped after
    the park (parking.STOPPED): certainly dead without waiting for the API server."""
    view = read_lease(client, namespace=lease_namespace, name=lease_name)
    if not view.holder:
        return "lease already free"
    node = holder_node(view.holder, retired_nodes)
    if node not in retired_nodes:
        return f"holder {view.holder} is not a retired static pod: nothing to release"
    how = "its node's runtime shows its static pod stopped"
    if node not in set(stopped_nodes):
        wait_until(
            f"the static {component} on {node} to stop",
            lambda: static_pod_dead(
                client, component=component, node=node, namespace="kube-system"
            ),
            timeout=timeout,
        )
        how = f"its static pod on {node} has stopped"
    if release(client, namespace=lease_namespace, name=lease_name, holder=view.holder):
        return f"released the lease of {view.holder} ({how})"
    return "the lease changed hands meanwhile: nothing to release"
