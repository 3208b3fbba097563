"""The reads behind `status`: the components' Leases and their candidate pods.

A bounded number of requests whatever the size of the cluster: one GET per Lease and
two label-selected LISTs of pods for all components together (see
`kube.objects.candidate_selectors`), sent concurrently. Nothing here lists all pods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kubehoist.election import Candidate, LeaseRecord
from kubehoist.kube import objects
from kubehoist.kube.api import Api
from kubehoist.kube.requests import LEASES, PODS, get, list_


async def read_lease(api: Api, *, namespace: str, name: str) -> LeaseRecord | None:
    """The Lease, or None when it does not exist."""
    obj = await api.get_optional(get(LEASES, namespace=namespace, name=name))
    return objects.lease_record(obj) if obj is not None else None


async def read_candidates(
    api: Api, *, namespace: str, components: Sequence[str]
) -> dict[str, list[Candidate]]:
    """Every candidate pod of `components` in `namespace`, grouped by component."""
    results = await asyncio.gather(
        *(
            api.list(list_(PODS, namespace=namespace, labels=selector))
            for selector in objects.candidate_selectors(components)
        )
    )
    return objects.candidates(
        (item for result in results for item in result.items), components=components
    )


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
