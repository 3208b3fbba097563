"""The machine form of `kubehoist status` (`-o json|yaml`): a `StatusReport` as plain
dicts with stable keys — each component's Lease, leader, candidates, guards and
credentials, with times as ISO 8601 strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubehoist import certexpiry
from kubehoist.election import Candidate, parse_identity
from kubehoist.status import GuardStatus, StatusReport


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def candidate_dict(c: Candidate, *, role: str | None) -> dict[str, Any]:
    return {
        "pod": c.name,
        "namespace": c.namespace,
        "kind": c.kind.value,
        "node": c.node,
        "hostname": c.hostname,
        "ready": c.ready,
        "readySince": _iso(c.ready_since),
        "restarts": c.restarts,
        "created": _iso(c.created),
        "terminating": c.terminating,
        "podIP": c.pod_ip,
        "role": role,
    }


def guard_dict(g: GuardStatus, *, now: float) -> dict[str, Any]:
    lease: dict[str, Any] | None = None
    if g.observation is not None:
        rec = g.observation.lease
        validity = g.validity(now=now)
        lease = {
            "namespace": rec.namespace,
            "name": rec.name,
            "holderIdentity": rec.holder,
            "holderNode": parse_identity(rec.holder).hostname if rec.holder else None,
            "acquireTime": _iso(rec.acquire_time),
            "renewTime": _iso(rec.renew_time),
            "leaseDurationSeconds": rec.duration_s,
            "leaseTransitions": rec.transitions,
            "validity": validity.value if validity else None,
            "observedSeconds": round(g.observed_s, 3),
            "secondsSinceObservedChange": (
                None
                if g.observation.changed_at is None
                else round(now - g.observation.changed_at, 3)
            ),
        }
    return {
        "installed": g.installed,
        "leader": g.leader(now=now),
        "lease": lease,
        "leaseError": g.lease_error,
        "ready": g.ready,
        "pods": [
            {
                "pod": p.name,
                "node": p.node,
                "ready": p.ready,
                "restarts": p.restarts,
                "created": _iso(p.created),
                "terminating": p.terminating,
                "role": g.role(p, now=now).value,
            }
            for p in g.pods
        ],
        "events": [
            {
                "time": _iso(e.time),
                "node": e.node,
                "reason": e.reason,
                "type": e.type,
                "message": e.message,
                "count": e.count,
                "name": e.name,
            }
            for e in g.events
        ],
        "eventsFound": g.events_found,
        "eventsError": g.events_error,
    }


def to_dict(report: StatusReport, *, now: float) -> dict[str, Any]:
    """The stable machine form of a report (`-o json|yaml`)."""
    out = []
    for s in report.components:
        a = s.assessment
        lease: dict[str, Any] | None = None
        if s.observation is not None:
            rec = s.observation.lease
            lease = {
                "namespace": rec.namespace,
                "name": rec.name,
                "holderIdentity": rec.holder,
                "holderHostname": a.identity.hostname if a.identity else None,
                "holderUUID": a.identity.uuid if a.identity else None,
                "acquireTime": _iso(rec.acquire_time),
                "renewTime": _iso(rec.renew_time),
                "leaseDurationSeconds": rec.duration_s,
                "leaseTransitions": rec.transitions,
                "validity": a.validity.value if a.validity else None,
                "observedSeconds": round(s.observed_s, 3),
                "secondsSinceObservedChange": (
                    None
                    if s.observation.changed_at is None
                    else round(now - s.observation.changed_at, 3)
                ),
            }
        leader = a.leader
        out.append(
            {
                "component": s.component,
                "verdict": a.verdict.value,
                "reason": a.reason,
                "lease": lease,
                "leader": candidate_dict(leader, role="leader") if leader else None,
                "standbys": a.standbys,
                "candidates": [
                    candidate_dict(c, role=(r.value if (r := a.role(c.name)) else None))
                    for c in s.candidates
                ],
                "guard": guard_dict(s.guard, now=now),
                "credentials": (
                    certexpiry.to_dict(s.credentials, now=report.taken_at)
                    if s.credentials is not None
                    else None
                ),
                "credentialsError": s.credentials_error,
            }
        )
    return {
        "takenAt": _iso(report.taken_at),
        "healthy": report.healthy,
        "apiRequests": report.requests,
        "components": out,
    }
