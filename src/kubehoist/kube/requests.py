"""PURE: every request kubehoist sends, built as data before anything is sent.

A builder returns an `ApiRequest` (method, path, query, the `Call` it stands for);
`kube.api` sends it. Tests assert paths, selectors and parameters on these values
and, through a mock transport, on the wire. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubehoist.constants import field_selector as field_selector
from kubehoist.kube.errors import Call


@dataclass(frozen=True, kw_only=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def collection(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        return f"{base}/{self.plural}"


PODS = Resource(group="", version="v1", plural="pods")
LEASES = Resource(group="coordination.k8s.io", version="v1", plural="leases")
NODES = Resource(group="", version="v1", plural="nodes", namespaced=False)
DEPLOYMENTS = Resource(group="apps", version="v1", plural="deployments")
EVENTS = Resource(group="", version="v1", plural="events")
SECRETS = Resource(group="", version="v1", plural="secrets")


@dataclass(frozen=True, kw_only=True)
class ApiRequest:
    """One HTTP request to the API server, fully decided."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    call: Call


def get(resource: Resource, *, name: str, namespace: str | None = None) -> ApiRequest:
    return ApiRequest(
        method="GET",
        path=f"{resource.collection(namespace)}/{name}",
        params=(),
        call=Call(verb="get", resource=resource.plural, namespace=namespace, name=name),
    )


def list_(
    resource: Resource,
    *,
    namespace: str | None = None,
    labels: str = "",
    fields: str = "",
    limit: int | None = 500,
    continue_token: str | None = None,
) -> ApiRequest:
    """A LIST, paged with `limit` so that no single answer is unbounded."""
    params: list[tuple[str, str]] = []
    if labels:
        params.append(("labelSelector", labels))
    if fields:
        params.append(("fieldSelector", fields))
    if limit is not None:
        params.append(("limit", str(limit)))
    if continue_token:
        params.append(("continue", continue_token))
    return ApiRequest(
        method="GET",
        path=resource.collection(namespace),
        params=tuple(params),
        call=Call(verb="list", resource=resource.plural, namespace=namespace),
    )


def watch(
    resource: Resource,
    *,
    namespace: str | None = None,
    labels: str = "",
    fields: str = "",
    resource_version: str,
    timeout_s: int,
) -> ApiRequest:
    """A WATCH from `resource_version` (never "" or "0": we always list first), with bookmarks.

    Bookmarks keep our resourceVersion fresh while nothing we select changes, so that
    reconnecting after a quiet hour does not fall off the server's history (410).
    `timeoutSeconds` makes the server end the stream cleanly; we then resume.
    """
    params: list[tuple[str, str]] = [("watch", "true")]
    if labels:
        params.append(("labelSelector", labels))
    if fields:
        params.append(("fieldSelector", fields))
    params += [
        ("resourceVersion", resource_version),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(timeout_s)),
    ]
    return ApiRequest(
        method="GET",
        path=resource.collection(namespace),
        params=tuple(params),
        call=Call(verb="watch", resource=resource.plural, namespace=namespace),
    )
