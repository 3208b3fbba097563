"""Decoding API objects (JSON) into the pure types of `election`.

Owns which fields of a Pod and a Lease kubehoist reads, and how a pod is recognised
as a candidate of a component: kubeadm's static pods and the article's Deployment
carry `component=<name>`; kubehoist's own Deployment pods carry
`app.kubernetes.io/name=<name>` with `app.kubernetes.io/managed-by=kubehoist`.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from kubehoist.constants import MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL
from kubehoist.election import Candidate, CandidateKind, LeaseRecord
from kubehoist.kube.requests import label_selector

KUBEADM_COMPONENT_LABEL: Final = "component"
"""Set by kubeadm on its static pods, and by the article on its Deployment's pods."""
MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"


def candidate_selectors(components: Iterable[str]) -> tuple[str, ...]:
    """The label selectors that find every candidate of `components` (two LISTs in all)."""
    names = sorted(set(components))
    return (
        label_selector(within={KUBEADM_COMPONENT_LABEL: names}),
        label_selector(equals={MANAGED_BY_LABEL: MANAGED_BY_VALUE}, within={NAME_LABEL: names}),
    )


def component_of(labels: Mapping[str, str], components: Iterable[str]) -> str | None:
    wanted = set(components)
    for value in (
        labels.get(KUBEADM_COMPONENT_LABEL),
        labels.get(NAME_LABEL) if labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE else None,
    ):
        if value in wanted:
            return value
    return None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def lease_record(obj: Mapping[str, Any]) -> LeaseRecord:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    holder = spec.get("holderIdentity")
    return LeaseRecord(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        holder=holder if isinstance(holder, str) and holder else None,
        duration_s=_int(spec.get("leaseDurationSeconds")),
        acquire_time=parse_time(spec.get("acquireTime")),
        renew_time=parse_time(spec.get("renewTime")),
        transitions=_int(spec.get("leaseTransitions")),
        resource_version=str(meta.get("resourceVersion") or ""),
        strategy=spec.get("strategy") if isinstance(spec.get("strategy"), str) else None,
        preferred_holder=(
            spec.get("preferredHolder") if isinstance(spec.get("preferredHolder"), str) else None
        ),
    )


def _kind(meta: Mapping[str, Any]) -> CandidateKind:
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return CandidateKind.STATIC
    for owner in meta.get("ownerReferences") or ():
        if isinstance(owner, Mapping) and owner.get("kind") == "ReplicaSet":
            return CandidateKind.DEPLOYMENT
    return CandidateKind.POD


def candidate(obj: Mapping[str, Any], *, component: str) -> Candidate:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = False
    ready_since = None
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            ready_since = parse_time(cond.get("lastTransitionTime")) if ready else None
    restarts = sum(
        _int(cs.get("restartCount")) or 0
        for cs in status.get("containerStatuses") or ()
        if isinstance(cs, Mapping)
    )
    return Candidate(
        component=component,
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
        kind=_kind(meta),
        node=spec.get("nodeName") or None,
        host_network=bool(spec.get("hostNetwork")),
        spec_hostname=spec.get("hostname") or None,
        ready=ready,
        ready_since=ready_since,
        restarts=restarts,
        created=parse_time(meta.get("creationTimestamp")),
        terminating=meta.get("deletionTimestamp") is not None,
        phase=str(status.get("phase") or ""),
        pod_ip=status.get("podIP") or None,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def candidates(
    objs: Iterable[Mapping[str, Any]], *, components: Iterable[str]
) -> dict[str, list[Candidate]]:
    """Pods grouped by component, each pod once (the two selectors may overlap)."""
    wanted = sorted(set(components))
    out: dict[str, list[Candidate]] = {c: [] for c in wanted}
    seen: set[str] = set()
    for obj in objs:
        meta = obj.get("metadata") or {}
        key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        comp = component_of(meta.get("labels") or {}, wanted)
        if comp is None or key in seen:
            continue
        seen.add(key)
        out[comp].append(candidate(obj, component=comp))
    for comp in out:
        out[comp].sort(key=lambda c: (c.kind.value != "static", c.node or "", c.name))
    return out
