"""The reads behind `status`: the components' Leases, their candidate pods, and their
guards.

A bounded number of requests whatever the size of the cluster: one GET per Lease and
two label-selected LISTs of pods for all components together (see
`kube.objects.candidate_selectors`; the second one also brings the guard pods), one
label-selected LIST of the guards' Leases and one field-selected LIST of the guards'
Events, sent concurrently. Nothing here lists all pods or all Events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod, Secret

from kubehoist import certexpiry
from kubehoist.election import Candidate, LeaseRecord
from kubehoist.kube import objects
from kubehoist.kube.api import Api
from kubehoist.kube.objects import GuardEvent, GuardPod


async def read_lease(api: Api, *, namespace: str, name: str) -> LeaseRecord | None:
    """The Lease, or None when it does not exist."""
    obj = await api.get_optional(Lease, namespace=namespace, name=name)
    return objects.lease_record(obj) if obj is not None else None


async def read_pods(
    api: Api, *, namespace: str, components: Sequence[str], with_guards: bool = False
) -> tuple[dict[str, list[Candidate]], dict[str, list[GuardPod]]]:
    """(component -> candidates, component -> guard pods) in `namespace`: two LISTs
    either way (`with_guards` widens a selector; without it, no guard pod is read)."""
    results = await asyncio.gather(
        *(
            api.list(Pod, namespace=namespace, labels=selector)
            for selector in objects.candidate_selectors(components, with_guards=with_guards)
        )
    )
    items = [item for result in results for item in result.items]
    guards = objects.guard_pods(items, components=components) if with_guards else {}
    return objects.candidates(items, components=components), guards


async def read_candidates(
    api: Api, *, namespace: str, components: Sequence[str]
) -> dict[str, list[Candidate]]:
    """Every candidate pod of `components` in `namespace`, grouped by component."""
    candidates, _ = await read_pods(api, namespace=namespace, components=components)
    return candidates


async def read_guard_leases(
    api: Api, *, namespace: str, components: Sequence[str]
) -> dict[str, LeaseRecord]:
    """component -> its guards' Lease `kubehoist-guard-<component>`, when there is one."""
    result = await api.list(
        Lease, namespace=namespace, labels=objects.guard_lease_selector(components)
    )
    return objects.guard_leases(result.items, components=components)


async def read_guard_events(
    api: Api, *, namespace: str, components: Sequence[str]
) -> dict[str, list[GuardEvent]]:
    """component -> the `Guard*` Events on its Deployment, newest first (one LIST)."""
    result = await api.list(
        Event, namespace=namespace, fields=objects.guard_event_fields(components)
    )
    return objects.guard_events(result.items, components=components)


async def read_election(
    api: Api, *, namespace: str, leases: Sequence[tuple[str, str, str]]
) -> tuple[dict[str, LeaseRecord | None], dict[str, list[Candidate]]]:
    """(component -> Lease, component -> candidates); `leases` is (component, ns, name)."""
    components = [c for c, _, _ in leases]
    found, cands = await asyncio.gather(
        asyncio.gather(*(read_lease(api, namespace=ns, name=n) for _, ns, n in leases)),
        read_candidates(api, namespace=namespace, components=components),
    )
    return dict(zip(components, found, strict=True)), cands


async def read_credentials_secrets(
    api: Api, *, namespace: str, components: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """component -> (name, the Secret) its kubehoist Deployment mounts as credentials
    (None: named but missing), for the components that have such a Deployment: one
    label-selected LIST of Deployments, then one GET per Secret."""
    result = await api.list(
        Deployment, namespace=namespace, labels=certexpiry.deployment_selector(components)
    )
    names = certexpiry.credentials_secret_names(result.items, components=components)
    found = await asyncio.gather(
        *(api.get_optional(Secret, namespace=namespace, name=n) for n in names.values())
    )
    return {c: (n, obj) for (c, n), obj in zip(names.items(), found, strict=True)}
