"""`kubehoist status` as a library: read each component's Lease and candidates, judge.

`collect` makes the bounded set of reads (`kube.reads`), optionally watches the Leases
for `observe_s` seconds so that validity can be known by our own clock (the only
honest way: see `election`), and returns a `StatusReport` — plain data that the CLI
prints as a table, YAML or JSON (`to_dict` is the stable machine form).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kubehoist.components import Component
from kubehoist.election import (
    Assessment,
    Candidate,
    LeaseRecord,
    Observation,
    Verdict,
    assess,
    first_observation,
)
from kubehoist.kube import objects
from kubehoist.kube.api import Api
from kubehoist.kube.reads import read_candidates, read_election
from kubehoist.kube.requests import LEASES, field_selector
from kubehoist.kube.watch import Source, Upsert, informer

EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 3
"""Not every component is Healthy (1 stays for errors, 2 for usage, as click uses)."""


@dataclass(frozen=True, kw_only=True)
class ComponentStatus:
    component: str
    lease_namespace: str
    lease_name: str
    observation: Observation | None
    observed_s: float
    """How long kubehoist watched the Lease (0: one read, validity unknown)."""
    candidates: tuple[Candidate, ...]
    assessment: Assessment

    @property
    def lease(self) -> LeaseRecord | None:
        return self.observation.lease if self.observation is not None else None


@dataclass(frozen=True, kw_only=True)
class StatusReport:
    components: tuple[ComponentStatus, ...]
    taken_at: datetime
    requests: int

    @property
    def healthy(self) -> bool:
        return all(c.assessment.verdict is Verdict.HEALTHY for c in self.components)

    @property
    def exit_code(self) -> int:
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY


async def collect(
    api: Api,
    *,
    components: Sequence[Component],
    namespace: str | None,
    observe_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> StatusReport:
    """Read, optionally observe, and judge every component in `components`."""
    leases = [(c.name, namespace or c.lease_namespace, c.lease_name) for c in components]
    pod_namespace = namespace or components[0].lease_namespace
    start = clock()
    if observe_s > 0:
        observations, cands = await asyncio.gather(
            _observe(api, leases, observe_s=observe_s, clock=clock),
            _candidates(api, pod_namespace, [c for c, _, _ in leases]),
        )
    else:
        found, cands = await read_election(api, namespace=pod_namespace, leases=leases)
        observations = {
            name: first_observation(lease, now=start) if lease is not None else None
            for name, lease in found.items()
        }
    now = clock()
    statuses = []
    for component, ns, name in leases:
        obs = observations[component]
        candidates = tuple(cands.get(component, ()))
        statuses.append(
            ComponentStatus(
                component=component,
                lease_namespace=ns,
                lease_name=name,
                observation=obs,
                observed_s=now - start if observe_s > 0 else 0.0,
                candidates=candidates,
                assessment=assess(
                    component=component, observation=obs, candidates=candidates, now=now
                ),
            )
        )
    return StatusReport(
        components=tuple(statuses), taken_at=datetime.now(UTC), requests=api.log.count
    )


async def _candidates(
    api: Api, namespace: str, components: list[str]
) -> dict[str, list[Candidate]]:
    return await read_candidates(api, namespace=namespace, components=components)


async def _observe(
    api: Api,
    leases: Sequence[tuple[str, str, str]],
    *,
    observe_s: float,
    clock: Callable[[], float],
) -> dict[str, Observation | None]:
    """Watch each Lease for `observe_s` (or until it is seen to change)."""

    async def one(ns: str, name: str) -> Observation | None:
        obs: Observation | None = None
        source = Source(
            resource=LEASES, namespace=ns, fields=field_selector({"metadata.name": name})
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(observe_s):
                async for item in informer(api, source):
                    if not isinstance(item, Upsert):
                        continue
                    lease = objects.lease_record(item.obj)
                    now = clock()
                    obs = (
                        first_observation(lease, now=now)
                        if obs is None
                        else obs.observe(lease, now=now)
                    )
                    if obs.changed_at is not None:
                        return obs  # seen to change: valid, nothing more to learn
        return obs

    results = await asyncio.gather(*(one(ns, name) for _, ns, name in leases))
    return {component: obs for (component, _, _), obs in zip(leases, results, strict=True)}


# --- the machine form ------------------------------------------------------------


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
            }
        )
    return {
        "takenAt": _iso(report.taken_at),
        "healthy": report.healthy,
        "apiRequests": report.requests,
        "components": out,
    }
