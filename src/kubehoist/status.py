"""`kubehoist status` as a library: read each component's Lease and candidates, judge.

`collect` makes the bounded set of reads (`kube.reads`), optionally watches the Leases
for `observe_s` seconds so that validity can be known by our own clock (the only
honest way: see `election`), and returns a `StatusReport` — plain data that the CLI
prints as a table, YAML or JSON (`statusdoc.to_dict` is the stable machine form).

Each component also carries its guards (`GuardStatus`): the guards' Lease, judged by
the same clock rule, the guard pods, and the last `Guard*` Events. The guards never
change a verdict or the exit code, and a guard read that fails (RBAC on Events, say)
is reported next to the result instead of failing `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from lightkube.resources.coordination_v1 import Lease

from kubehoist import certexpiry
from kubehoist.certexpiry import CredentialsExpiry
from kubehoist.components import Component
from kubehoist.constants import field_selector
from kubehoist.election import (
    Assessment,
    Candidate,
    LeaseRecord,
    Observation,
    Role,
    Validity,
    Verdict,
    assess,
    first_observation,
    parse_identity,
)
from kubehoist.errors import KubehoistError
from kubehoist.kube import objects
from kubehoist.kube.api import Api
from kubehoist.kube.objects import GuardEvent, GuardPod
from kubehoist.kube.reads import (
    read_credentials_secrets,
    read_guard_events,
    read_guard_leases,
    read_lease,
    read_pods,
)
from kubehoist.kube.watch import Delete, Source, Synced, Upsert, informer

T = TypeVar("T")

EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 3
"""Not every component is Healthy (1 stays for errors, 2 for usage, as click uses)."""
GUARD_EVENTS: Final = 3
"""How many of the newest `Guard*` Events each component shows."""


@dataclass(frozen=True, kw_only=True)
class GuardStatus:
    """The guards of one component: their Lease, their pods, their last Events."""

    observation: Observation | None
    """None: no guards' Lease (no guard installed), or it could not be read."""
    observed_s: float
    lease_error: str | None = None
    """Why the guards' Lease could not be read; None when it was."""
    pods: tuple[GuardPod, ...] = ()
    events: tuple[GuardEvent, ...] = ()
    """The newest `GUARD_EVENTS` `Guard*` Events on the Deployment, newest first."""
    events_found: int = 0
    events_error: str | None = None
    """Why the Events could not be read; None when they were."""

    @property
    def lease(self) -> LeaseRecord | None:
        return self.observation.lease if self.observation is not None else None

    @property
    def installed(self) -> bool | None:
        """A guards' Lease or a guard pod exists; None when that cannot be told."""
        if self.observation is not None or self.pods:
            return True
        return None if self.lease_error is not None else False

    def validity(self, *, now: float) -> Validity | None:
        return None if self.observation is None else self.observation.validity(now=now)

    def leader(self, *, now: float) -> str | None:
        """The node whose guard holds the guards' Lease (`<node>_<uuid>`), unless the
        Lease is free or, by our clock, expired."""
        lease = self.lease
        if lease is None or not lease.holder:
            return None
        if self.validity(now=now) in (Validity.FREE, Validity.EXPIRED):
            return None
        return parse_identity(lease.holder).hostname

    def role(self, pod: GuardPod, *, now: float) -> Role:
        leader = self.leader(now=now)
        if leader is not None and pod.node is not None and pod.node.lower() == leader.lower():
            return Role.LEADER
        if pod.terminating:
            return Role.TERMINATING
        return Role.STANDBY if pod.ready else Role.NOT_READY

    @property
    def ready(self) -> int:
        return sum(1 for p in self.pods if p.ready and not p.terminating)


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
    guard: GuardStatus
    credentials: CredentialsExpiry | None = None
    """The client certificates of the Deployment's credentials Secret (None: no
    kubehoist Deployment, or they could not be read: `credentials_error`)."""
    credentials_error: str | None = None

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
    names = [c for c, _, _ in leases]
    pod_namespace = namespace or components[0].lease_namespace
    start = clock()
    # The guards' reads never fail status: `_tolerant` turns an error into a note.
    events = _tolerant(read_guard_events(api, namespace=pod_namespace, components=names))
    # Like the guards' reads, the credentials never fail status (RBAC on Secrets, say).
    secrets_read = _tolerant(
        read_credentials_secrets(api, namespace=pod_namespace, components=names)
    )
    pods = read_pods(api, namespace=pod_namespace, components=names, with_guards=True)
    guard_obs: dict[str, Observation]
    if observe_s > 0:
        (
            observations,
            guard_leases,
            (cands, guard_pods),
            (found_events, events_error),
            (secrets, secrets_error),
        ) = await asyncio.gather(
            _observe(api, leases, observe_s=observe_s, clock=clock),
            _observe_guards(api, pod_namespace, names, observe_s=observe_s, clock=clock),
            pods,
            events,
            secrets_read,
        )
        guard_obs, lease_error = guard_leases
    else:
        (
            found,
            (found_guards, lease_error),
            (cands, guard_pods),
            (found_events, events_error),
            (secrets, secrets_error),
        ) = await asyncio.gather(
            asyncio.gather(*(read_lease(api, namespace=ns, name=n) for _, ns, n in leases)),
            _tolerant(read_guard_leases(api, namespace=pod_namespace, components=names)),
            pods,
            events,
            secrets_read,
        )
        observations = {
            name: first_observation(lease, now=start) if lease is not None else None
            for name, lease in zip(names, found, strict=True)
        }
        guard_obs = {
            name: first_observation(lease, now=start)
            for name, lease in (found_guards or {}).items()
        }
    now = clock()
    observed_s = now - start if observe_s > 0 else 0.0
    statuses = []
    for component, ns, name in leases:
        obs = observations[component]
        candidates = tuple(cands.get(component, ()))
        recent = (found_events or {}).get(component, [])
        statuses.append(
            ComponentStatus(
                component=component,
                lease_namespace=ns,
                lease_name=name,
                observation=obs,
                observed_s=observed_s,
                candidates=candidates,
                assessment=assess(
                    component=component, observation=obs, candidates=candidates, now=now
                ),
                guard=GuardStatus(
                    observation=guard_obs.get(component),
                    observed_s=observed_s,
                    lease_error=lease_error,
                    pods=tuple(guard_pods.get(component, ())),
                    events=tuple(recent[:GUARD_EVENTS]),
                    events_found=len(recent),
                    events_error=events_error,
                ),
                credentials=_credentials(component, pod_namespace, secrets),
                credentials_error=secrets_error,
            )
        )
    return StatusReport(
        components=tuple(statuses), taken_at=datetime.now(UTC), requests=api.log.count
    )


def _credentials(
    component: str,
    namespace: str,
    secrets: dict[str, tuple[str, dict[str, Any] | None]] | None,
) -> CredentialsExpiry | None:
    if secrets is None or component not in secrets:
        return None
    name, secret = secrets[component]
    if secret is None:
        return CredentialsExpiry(
            secret=f"{namespace}/{name}",
            problems=(
                f"Secret {namespace}/{name}, which Deployment {component} mounts, is missing",
            ),
        )
    return certexpiry.from_secret(secret)


async def _tolerant(read: Awaitable[T]) -> tuple[T | None, str | None]:
    """(result, None), or (None, why) when the read failed: for the guards' reads, which
    must not fail `status`."""
    try:
        return await read, None
    except KubehoistError as exc:
        return None, exc.message


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
            resource=Lease, namespace=ns, fields=field_selector({"metadata.name": name})
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


async def _observe_guards(
    api: Api,
    namespace: str,
    components: Sequence[str],
    *,
    observe_s: float,
    clock: Callable[[], float],
) -> tuple[dict[str, Observation], str | None]:
    """Watch the guards' Leases (one label-selected stream for all) for `observe_s`, or
    until each of those listed is seen to change; none listed: nothing to wait for."""
    by_name = {objects.guard_name(c): c for c in components}
    seen: dict[str, Observation] = {}
    synced = False
    source = Source(
        resource=Lease, namespace=namespace, labels=objects.guard_lease_selector(components)
    )
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(observe_s):
                async for item in informer(api, source):
                    if isinstance(item, Synced):
                        synced = True
                    elif isinstance(item, Upsert | Delete):
                        lease = objects.lease_record(item.obj)
                        component = by_name.get(lease.name)
                        if component is None:
                            continue
                        if isinstance(item, Delete):
                            seen.pop(component, None)
                            continue
                        now = clock()
                        old = seen.get(component)
                        seen[component] = (
                            first_observation(lease, now=now)
                            if old is None
                            else old.observe(lease, now=now)
                        )
                    if synced and all(
                        o.changed_at is not None or not o.lease.held for o in seen.values()
                    ):
                        break  # each seen to change (valid) or free: nothing more to learn
    except KubehoistError as exc:
        return seen, exc.message
    return seen, None
