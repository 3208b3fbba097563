"""Reading, releasing and waiting on a leader-election Lease, shared by pivot's
hand-over, the guard's reaper and `credentials refresh`.

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
