"""PURE: Pod JSON -> `PodView`, the fields the guard's decisions read. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubehoist.guard.decide import ContainerView, PodView
from kubehoist.kube.objects import MIRROR_ANNOTATION, is_ready, parse_time


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
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = is_ready(obj)
    owners = [o for o in meta.get("ownerReferences") or () if isinstance(o, Mapping)]
    return PodView(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        node=spec.get("nodeName") or None,
        static=MIRROR_ANNOTATION in (meta.get("annotations") or {}),
        deployment=any(o.get("kind") == "ReplicaSet" for o in owners),
        host_network=bool(spec.get("hostNetwork")),
        spec_hostname=spec.get("hostname") or None,
        ready=ready,
        phase=str(status.get("phase") or ""),
        deleting=meta.get("deletionTimestamp") is not None,
        gone=gone,
        container=_container(status, component),
    )
