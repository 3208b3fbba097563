"""A fake API server for unit tests: answers GET/LIST of Leases, Pods and Events from
memory (label and field selectors), WATCHes with an empty stream, records every
request, and plugs into httpx2.MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
POD_PATH = "/api/v1/namespaces/{ns}/pods"
UUID_A = "0f8fad5b-d9cb-469f-a165-70867728950e"
UUID_B = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def lease(
    name: str = "kube-controller-manager",
    holder: str | None = f"cp-1_{UUID_A}",
    *,
    ns: str = "kube-system",
    rv: str = "100",
    transitions: int = 0,
    renew: str = "2026-01-01T00:00:10.000000Z",
    labels: dict[str, str] | None = None,
    duration: int = 15,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "leaseDurationSeconds": duration,
        "acquireTime": "2026-01-01T00:00:00.000000Z",
        "renewTime": renew,
        "leaseTransitions": transitions,
    }
    if holder is not None:
        spec["holderIdentity"] = holder
    return {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": rv,
            "labels": dict(labels or {}),
        },
        "spec": spec,
    }


def guard_lease(
    component: str = "kube-controller-manager",
    holder: str | None = f"cp-2_{UUID_B}",
    *,
    renew: str = "2026-01-01T00:00:12.000000Z",
    duration: int = 15,
) -> dict[str, Any]:
    """The guards' Lease as guard/loop.py creates it (kubehoist's labels of the component)."""
    return lease(
        f"kubehoist-guard-{component}",
        holder,
        renew=renew,
        duration=duration,
        labels={
            "app.kubernetes.io/managed-by": "kubehoist",
            "app.kubernetes.io/name": component,
            "app.kubernetes.io/part-of": "kubehoist",
        },
    )


def guard_pod(
    node: str,
    *,
    component: str = "kube-controller-manager",
    ready: bool = True,
    restarts: int = 0,
) -> dict[str, Any]:
    """A guard's mirror pod, labelled as guard/manifest.py labels the static pod."""
    obj = pod(
        f"kubehoist-guard-{component}-{node}",
        component=component,
        node=node,
        static=True,
        ready=ready,
        restarts=restarts,
    )
    obj["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "kubehoist",
        "app.kubernetes.io/name": f"kubehoist-guard-{component}",
        "app.kubernetes.io/part-of": "kubehoist",
        "component": f"kubehoist-guard-{component}",
        "tier": "control-plane",
    }
    return obj


def event(
    reason: str = "GuardFallback",
    message: str = "no valid leader for 20s (grace 20s) and no Ready Deployment replica",
    *,
    component: str = "kube-controller-manager",
    node: str = "cp-1",
    at: str = "2026-01-01T00:01:00Z",
    source: str = "kubehoist-guard",
    kind: str = "Deployment",
    name: str | None = None,
    ns: str = "kube-system",
) -> dict[str, Any]:
    """A core/v1 Event on the component's Deployment, as Guard.emit_event writes it."""
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": name or f"{component}.guard.{reason}.{node}.{at}".lower().replace(":", "-"),
            "namespace": ns,
            "creationTimestamp": at,
        },
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": kind,
            "name": component,
            "namespace": ns,
        },
        "reason": reason,
        "message": message,
        "type": "Normal" if reason == "GuardHandBack" else "Warning",
        "source": {"component": source, "host": node},
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }


def pod(
    name: str,
    *,
    component: str = "kube-controller-manager",
    node: str = "cp-1",
    static: bool = False,
    host_network: bool | None = None,
    ready: bool = True,
    ns: str = "kube-system",
    rv: str = "10",
    kubehoist: bool = False,
    restarts: int = 0,
) -> dict[str, Any]:
    labels = (
        {"app.kubernetes.io/managed-by": "kubehoist", "app.kubernetes.io/name": component}
        if kubehoist
        else {"component": component, "tier": "control-plane"}
    )
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "uid": f"uid-{name}",
        "resourceVersion": rv,
        "labels": labels,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if static:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node, "uid": f"uid-{node}"}
        ]
    else:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{component}-rs",
                "uid": "uid-rs",
            }
        ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "hostNetwork": static if host_network is None else host_network,
            "containers": [{"name": component, "image": f"registry.k8s.io/{component}:v1.36.3"}],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.5",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": "2026-01-01T00:00:05Z",
                }
            ],
            "containerStatuses": [
                {
                    "name": component,
                    "restartCount": restarts,
                    "ready": ready,
                    "image": f"registry.k8s.io/{component}:v1.36.3",
                    "imageID": "",
                }
            ],
        },
    }


_EVENT_FIELDS = {"source": ("source", "component")}


def _fields_match(selector: str, obj: dict[str, Any]) -> bool:
    # `a.b=v` terms, as the API server selects Events (`source` is source.component).
    for term in filter(None, selector.split(",")):
        key, value = term.split("=", 1)
        found: Any = obj
        for part in _EVENT_FIELDS.get(key, tuple(key.split("."))):
            found = found.get(part) if isinstance(found, dict) else None
        if found != value:
            return False
    return True


def _matches(selector: str, labels: dict[str, str]) -> bool:
    # Enough of the label selector grammar for kubehoist's selectors.
    terms: list[str] = []
    depth, cur = 0, ""
    for ch in selector:
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        terms.append(cur)
    for term in terms:
        if " in (" in term:
            key, values = term.split(" in (", 1)
            if labels.get(key.strip()) not in values.rstrip(")").split(","):
                return False
        elif "=" not in term:  # `key`: the label exists
            if term.strip() not in labels:
                return False
        else:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


def held_open(*events: dict[str, Any]) -> httpx2.Response:
    """A WATCH answer as a real API server gives it: the events, then a stream held
    open (until the client closes it; the server's timeoutSeconds is not modelled)."""

    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield (json.dumps(event) + "\n").encode()
        await asyncio.Event().wait()

    return httpx2.Response(200, content=body())


@dataclass
class FakeCluster:
    leases: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx2.Request] = field(default_factory=list)
    forbid: set[str] = field(default_factory=set)
    """Resources ("pods", "leases", "events"), or "<resource>:list" for their LISTs
    only, whose requests answer 403."""
    fail: set[str] = field(default_factory=set)
    """The same, answering 500."""

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        params = dict(parse_qsl(request.url.query.decode()))
        collection = path.rsplit("/", 1)[1]
        for resource in {*self.forbid, *self.fail}:
            plural, _, verb = resource.partition(":")
            if f"/{plural}" in path and (not verb or collection == plural):
                if resource in self.fail:
                    return _status(500, "InternalError", "etcdserver: request timed out")
                return _status(
                    403,
                    "Forbidden",
                    f'{plural} is forbidden: User "jane" cannot list resource '
                    f'"{plural}" in API group "" in the namespace "kube-system"',
                )
        if params.get("watch") == "true":
            return held_open()  # no change: the server holds the stream open
        if "/leases" in path:
            ns = path.split("/namespaces/")[1].split("/")[0]
            items = [x for x in self.leases if x["metadata"]["namespace"] == ns]
            if not path.endswith("/leases"):
                name = path.rsplit("/", 1)[1]
                for item in items:
                    if item["metadata"]["name"] == name:
                        return httpx2.Response(200, json=item)
                return _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            sel = params.get("labelSelector", "")
            fields = params.get("fieldSelector", "")
            items = [
                x
                for x in items
                if _matches(sel, x["metadata"].get("labels") or {}) and _fields_match(fields, x)
            ]
            return _list(items, "LeaseList")
        if path.endswith("/events"):
            ns = path.split("/namespaces/")[1].split("/")[0]
            fields = params.get("fieldSelector", "")
            items = [
                e
                for e in self.events
                if e["metadata"]["namespace"] == ns and _fields_match(fields, e)
            ]
            return _list(items, "EventList")
        if path.endswith("/deployments"):
            ns = path.split("/namespaces/")[1].split("/")[0]
            sel = params.get("labelSelector", "")
            items = [
                d
                for d in self.deployments
                if d["metadata"]["namespace"] == ns and _matches(sel, d["metadata"]["labels"])
            ]
            return _list(items, "DeploymentList")
        if "/secrets/" in path:
            ns = path.split("/namespaces/")[1].split("/")[0]
            name = path.rsplit("/", 1)[1]
            for item in self.secrets:
                if item["metadata"]["namespace"] == ns and item["metadata"]["name"] == name:
                    return httpx2.Response(200, json=item)
            return _status(404, "NotFound", f'secrets "{name}" not found')
        if path == "/api/v1/nodes":
            sel = params.get("labelSelector", "")
            return _list(
                [n for n in self.nodes if _matches(sel, n["metadata"].get("labels") or {})],
                "NodeList",
            )
        if path.endswith("/pods"):
            ns = path.split("/namespaces/")[1].split("/")[0]
            sel = params.get("labelSelector", "")
            items = [
                p
                for p in self.pods
                if p["metadata"]["namespace"] == ns and _matches(sel, p["metadata"]["labels"])
            ]
            return _list(items, "PodList")
        return _status(404, "NotFound", "the server could not find the requested resource")

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handler)


def _list(items: list[dict[str, Any]], kind: str) -> httpx2.Response:
    return httpx2.Response(
        200, json={"kind": kind, "metadata": {"resourceVersion": "500"}, "items": items}
    )


def _status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
    body["message"] = message
    return httpx2.Response(
        code, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def write_kubeconfig(path: Path, *, server: str = "https://10.0.0.1:6443") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [
                    {"name": "lab", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "jane", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "jane"}}],
            }
        )
    )
    return path
