"""PURE: Pod JSON -> `PodView`, the fields the guard's decisions read. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubehoist.election import CandidateKind
from kubehoist.guard.decide import ContainerView, PodView
from kubehoist.kube.objects import candidate, parse_time


def _container(status: Mapping[str, Any], name: str) -> ContainerView | None:
    statuses = [cs for cs in status.get("containerStatuses") or () if isinstance(cs, Mapping)]
    chosen = next((cs for cs in statuses if cs.get("name") == name), None)
    if chosen is None and len(statuses) == 1:
        chosen = statuses[0]
    if chosen is None:
        return None
    state = chosen.get("state") or {}
    last = (chosen.get("lastState") or {}).get("terminated") or {}
    kind = next((k for k in ("running", "terminated", "waiting") if state.get(k)), "")
    current = state.get(kind) or {} if kind else {}
    restarts = chosen.get("restartCount")
    return ContainerView(
        container_id=str(chosen.get("containerID") or current.get("containerID") or ""),
        restarts=restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0,
        state=kind,
        started_at=parse_time(current.get("startedAt")),
        finished_at=parse_time(current.get("finishedAt")) if kind == "terminated" else None,
        last_finished_at=parse_time(last.get("finishedAt")),
    )


def pod_view(obj: Mapping[str, Any], *, component: str, gone: bool = False) -> PodView:
    """The guard's view of a pod: status's decoding (`kube.objects.candidate`, the one
    pod decoder) and the component container's times, which only the guard reads."""
    c = candidate(obj, component=component)
    return PodView(
        name=c.name,
        uid=c.uid,
        node=c.node,
        static=c.kind is CandidateKind.STATIC,
        deployment=c.kind is CandidateKind.DEPLOYMENT,
        host_network=c.host_network,
        spec_hostname=c.spec_hostname,
        ready=c.ready,
        phase=c.phase,
        deleting=c.terminating,
        gone=gone,
        container=_container(obj.get("status") or {}, component),
    )
