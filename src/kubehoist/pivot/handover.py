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

The release is an update with the Lease's resourceVersion, done the way client-go
releases its own lock (empty holder, duration 1 s, transitions kept): if anyone wrote
the Lease in between, the update fails and nothing is released.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.election import node_of_host, parse_identity
from kubehoist.errors import KubehoistError
from kubehoist.kube import retry
from kubehoist.kube.client import get_or_none
from kubehoist.kube.errors import status_code, transient


@dataclass(frozen=True, kw_only=True)
class LeaseView:
    holder: str
    resource_version: str
    renew_time: dt.datetime | None
    transitions: int


def read_lease(client: Client, *, namespace: str, name: str) -> LeaseView:
    lease = get_or_none(client, Lease, name, namespace=namespace)
    if lease is None:
        raise KubehoistError(f"Lease {namespace}/{name} not found (is leader election on?)")
    spec = lease.spec
    assert lease.metadata is not None
    return LeaseView(
        holder=(spec.holderIdentity if spec else None) or "",
        resource_version=lease.metadata.resourceVersion or "",
        renew_time=spec.renewTime if spec else None,
        transitions=(spec.leaseTransitions if spec else None) or 0,
    )


def release(client: Client, *, namespace: str, name: str, holder: str) -> bool:
    """Release the Lease if `holder` still holds it. True when released."""
    lease = client.get(Lease, name, namespace=namespace)
    spec = lease.spec
    if spec is None or (spec.holderIdentity or "") != holder or not holder:
        return False
    now = dt.datetime.now(dt.UTC)
    spec.holderIdentity = ""
    spec.leaseDurationSeconds = 1
    spec.acquireTime = now
    spec.renewTime = now
    try:
        client.replace(lease)  # carries metadata.resourceVersion: fails if it moved
    except (ApiError, KubehoistError) as exc:
        if status_code(exc) == 409:
            return False
        raise
    return True


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


def wait_until(
    what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.1
) -> float:
    """Poll `check` until true; return the seconds waited; a clear error on timeout.

    An API server that goes away meanwhile does not end the wait: the requests of
    `check` are retried until the wait's own deadline (`kube.retry.within`), and a
    failure that may pass (`kube.errors.transient`) counts as "not yet"; the timeout
    then names it."""
    start = time.monotonic()
    last = ""
    with retry.within(timeout):
        while True:
            try:
                if check():
                    return time.monotonic() - start
                last = ""
            except KubehoistError as exc:
                if not transient(exc):
                    raise
                last = exc.message
            if time.monotonic() - start > timeout:
                raise KubehoistError(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f" (last: {last})" if last else "")
                )
            time.sleep(interval)


def holder_node(holder: str, nodes: Iterable[str] = ()) -> str:
    """The hostname part of a holder identity; for a static pod, the node of `nodes`
    it names (an FQDN hostname names its node by its first label)."""
    host = parse_identity(holder).hostname
    return node_of_host(host, nodes) or host


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
