"""Decoding API objects (JSON) into the pure types of `election`.

Owns which fields of a Pod and a Lease kubehoist reads, and how a pod is recognised
as a candidate of a component: kubeadm's static pods and the article's Deployment
carry `component=<name>`; kubehoist's own Deployment pods carry
`app.kubernetes.io/name=<name>` with `app.kubernetes.io/managed-by=kubehoist`.
The guards (docs/guard.md) are found the same way: their Lease
`kubehoist-guard-<component>` and their static pods, labelled
`app.kubernetes.io/name=kubehoist-guard-<component>`, and the `Guard*` Events they
write on the component's Deployment (source `kubehoist-guard`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kubehoist.constants import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NAME_LABEL,
    Selector,
    field_selector,
    label_selector,
)
from kubehoist.constants import MIRROR_ANNOTATION as MIRROR_ANNOTATION
from kubehoist.election import Candidate, CandidateKind, LeaseRecord

KUBEADM_COMPONENT_LABEL: Final = "component"
"""Set by kubeadm on its static pods, and by the article on its Deployment's pods."""
GUARD_PREFIX: Final = "kubehoist-guard-"
"""`kubehoist-guard-<component>`: the guards' Lease and their pods' name label."""
GUARD_EVENT_SOURCE: Final = "kubehoist-guard"
"""`source.component` of the Events a guard writes."""
GUARD_EVENT_REASON_PREFIX: Final = "Guard"
"""GuardFallback, GuardHandBack, GuardReap."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def guard_name(component: str) -> str:
    """The guards' Lease of `component`, and the name label of its guard pods."""
    return GUARD_PREFIX + component


def candidate_selectors(
    components: Iterable[str], *, with_guards: bool = False
) -> tuple[Selector, ...]:
    """The label selectors that find every candidate of `components` (two LISTs in all).

    `with_guards` widens the second one to the guard pods of `components` too (they
    carry `managed-by=kubehoist` and `name=kubehoist-guard-<component>`), so that
    status reads them with no request of their own; `candidates` leaves them out.
    """
    names = sorted(set(components))
    kubehoist_names = names + [guard_name(n) for n in names] if with_guards else names
    return (
        label_selector(within={KUBEADM_COMPONENT_LABEL: names}),
        label_selector(
            equals={MANAGED_BY_LABEL: MANAGED_BY_VALUE}, within={NAME_LABEL: kubehoist_names}
        ),
    )


def guard_lease_selector(components: Iterable[str]) -> Selector:
    """The guards' Leases carry kubehoist's labels of their component (one LIST for all)."""
    return label_selector(
        equals={MANAGED_BY_LABEL: MANAGED_BY_VALUE}, within={NAME_LABEL: sorted(set(components))}
    )


def guard_event_fields(components: Iterable[str]) -> Selector:
    """Events a guard wrote on a Deployment; on the one Deployment when one component."""
    fields = {"involvedObject.kind": "Deployment", "source": GUARD_EVENT_SOURCE}
    names = sorted(set(components))
    if len(names) == 1:
        fields["involvedObject.name"] = names[0]
    return field_selector(fields)


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


def ready_condition(obj: Any) -> tuple[bool, datetime | None]:
    """PURE: whether a pod or a node (a lightkube object or its dict) has its condition
    `Ready` True, and since when (its lastTransitionTime) when it has. The one
    readiness rule of the project."""
    if isinstance(obj, Mapping):
        status = obj.get("status") or {}
        conds: Any = status.get("conditions") if isinstance(status, Mapping) else None
        for cond in conds or ():
            if isinstance(cond, Mapping) and cond.get("type") == "Ready":
                ready = cond.get("status") == "True"
                return ready, parse_time(cond.get("lastTransitionTime")) if ready else None
        return False, None
    status = getattr(obj, "status", None)
    for cond in (getattr(status, "conditions", None) if status else None) or ():
        if cond.type == "Ready":
            ready = cond.status == "True"
            return ready, cond.lastTransitionTime if ready else None
    return False, None


def is_ready(obj: Any) -> bool:
    """PURE: `ready_condition`'s first half."""
    return ready_condition(obj)[0]


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
    ready, ready_since = ready_condition(obj)
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


# --- the guards ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GuardPod:
    """A guard's (mirror) pod: one per control-plane node."""

    component: str
    name: str
    node: str | None
    ready: bool
    restarts: int
    created: datetime | None
    terminating: bool


@dataclass(frozen=True, kw_only=True)
class GuardEvent:
    """An Event a guard wrote on the component's Deployment (one per action)."""

    component: str
    name: str
    reason: str
    message: str
    type: str
    node: str | None
    """`source.host`: the node whose guard acted."""
    time: datetime | None
    """`lastTimestamp`, else `eventTime`, `firstTimestamp`, creation: the writer's clock."""
    count: int


def guard_pods(
    objs: Iterable[Mapping[str, Any]], *, components: Iterable[str]
) -> dict[str, list[GuardPod]]:
    """The guard pods among `objs`, grouped by component, each pod once, by node."""
    by_label = {guard_name(c): c for c in sorted(set(components))}
    out: dict[str, list[GuardPod]] = {c: [] for c in by_label.values()}
    seen: set[str] = set()
    for obj in objs:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        managed = labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
        comp = by_label.get(str(labels.get(NAME_LABEL))) if managed else None
        key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        if comp is None or key in seen:
            continue
        seen.add(key)
        c = candidate(obj, component=comp)
        out[comp].append(
            GuardPod(
                component=comp,
                name=c.name,
                node=c.node,
                ready=c.ready,
                restarts=c.restarts,
                created=c.created,
                terminating=c.terminating,
            )
        )
    for pods in out.values():
        pods.sort(key=lambda p: (p.node or "", p.name))
    return out


def guard_leases(
    objs: Iterable[Mapping[str, Any]], *, components: Iterable[str]
) -> dict[str, LeaseRecord]:
    """component -> its guards' Lease, among `objs` (matched by exact name)."""
    by_name = {guard_name(c): c for c in components}
    out: dict[str, LeaseRecord] = {}
    for obj in objs:
        record = lease_record(obj)
        comp = by_name.get(record.name)
        if comp is not None:
            out[comp] = record
    return out


def guard_event(obj: Mapping[str, Any], *, component: str) -> GuardEvent:
    meta = obj.get("metadata") or {}
    source = obj.get("source") or {}
    when = (
        parse_time(obj.get("lastTimestamp"))
        or parse_time(obj.get("eventTime"))
        or parse_time(obj.get("firstTimestamp"))
        or parse_time(meta.get("creationTimestamp"))
    )
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return GuardEvent(
        component=component,
        name=str(meta.get("name") or ""),
        reason=str(obj.get("reason") or ""),
        message=str(obj.get("message") or ""),
        type=str(obj.get("type") or ""),
        node=(source.get("host") or None) if isinstance(source, Mapping) else None,
        time=when,
        count=_int(obj.get("count")) or 1,
    )


def guard_events(
    objs: Iterable[Mapping[str, Any]], *, components: Iterable[str]
) -> dict[str, list[GuardEvent]]:
    """The `Guard*` Events on each component's Deployment, newest first."""
    wanted = sorted(set(components))
    out: dict[str, list[GuardEvent]] = {c: [] for c in wanted}
    for obj in objs:
        involved = obj.get("involvedObject") or {}
        source = obj.get("source") or {}
        if not isinstance(involved, Mapping) or involved.get("kind") != "Deployment":
            continue
        comp = involved.get("name")
        reason = obj.get("reason")
        if (
            comp not in out
            or not isinstance(reason, str)
            or not reason.startswith(GUARD_EVENT_REASON_PREFIX)
            or not isinstance(source, Mapping)
            or source.get("component") != GUARD_EVENT_SOURCE
        ):
            continue
        out[comp].append(guard_event(obj, component=comp))
    for events in out.values():
        events.sort(key=lambda e: (e.time is not None, e.time or _EPOCH, e.name), reverse=True)
    return out
