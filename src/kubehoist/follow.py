"""`kubehoist watch` as a library: run the watch streams and feed the timeline.

One `informer` per component Lease (a field selector on its name), one per
candidate label selector (all components together) and one of the guards' Events
(what `kubehoist guard` did: fallback, hand-back, reap) run concurrently; their items go
through one queue into a `Timeline`, in arrival order, stamped with our monotonic
clock on arrival. Between items the loop wakes at the next lease deadline so that an
expiry is reported when it happens by our clock, not at the next event.

Nothing is reported until every stream has listed once; then one `observing` event
per component says what we see, and from then on only changes are reported.

The guards' Events are extra: a watcher RBAC does not let read Events still watches
the election, and is told once (`stream_unavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event as KubeEvent
from lightkube.resources.core_v1 import Pod

from kubehoist.components import Component
from kubehoist.constants import field_selector
from kubehoist.kube import objects
from kubehoist.kube.api import Api, plural
from kubehoist.kube.errors import ApiServerError
from kubehoist.kube.watch import (
    Delete,
    Interrupted,
    Item,
    Resumed,
    Source,
    Synced,
    Upsert,
    informer,
)
from kubehoist.timeline import Event, Timeline

TICK_S: Final = 0.25
"""Longest sleep between checks of lease deadlines."""
ALL: Final = "*"


@dataclass(frozen=True, kw_only=True)
class Stream:
    """One watched source and the component it is about (ALL for the pod streams)."""

    component: str
    source: Source
    lease: bool
    optional: bool = False
    """The guards' Events: a refusal (RBAC) ends this stream, not the watch."""


@dataclass(frozen=True)
class Unavailable:
    """An optional stream the server refused; `error` says why."""

    error: str


def streams(components: Sequence[Component], *, namespace: str | None) -> tuple[Stream, ...]:
    names = [c.name for c in components]
    pod_ns = namespace or components[0].lease_namespace
    out = [
        Stream(
            component=c.name,
            lease=True,
            source=Source(
                resource=Lease,
                namespace=namespace or c.lease_namespace,
                fields=field_selector({"metadata.name": c.lease_name}),
            ),
        )
        for c in components
    ]
    out += [
        Stream(
            component=ALL, lease=False, source=Source(resource=Pod, namespace=pod_ns, labels=sel)
        )
        for sel in objects.candidate_selectors(names)
    ]
    out.append(
        Stream(
            component=ALL,
            lease=False,
            optional=True,
            source=Source(
                resource=KubeEvent, namespace=pod_ns, fields=objects.guard_event_fields(names)
            ),
        )
    )
    return tuple(out)


async def follow(
    api: Api,
    *,
    components: Sequence[Component],
    namespace: str | None,
    emit: Callable[[Event], None],
    timeline: Timeline | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run until cancelled, calling `emit` for every event of the timeline."""
    names = [c.name for c in components]
    tl = timeline if timeline is not None else Timeline(names)
    queue: asyncio.Queue[tuple[Stream, Item | Unavailable]] = asyncio.Queue()
    plan = streams(components, namespace=namespace)
    deferred: list[Event] = []

    async def pump(stream: Stream) -> None:
        try:
            async for item in informer(api, stream.source):
                await queue.put((stream, item))
        except ApiServerError as exc:
            if not stream.optional or exc.status.code not in (401, 403, 404):
                raise
            await queue.put((stream, Unavailable(error=exc.message)))

    pending = set(range(len(plan)))
    tasks = [asyncio.create_task(pump(s)) for s in plan]
    try:
        while True:
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            deadline = tl.next_deadline()
            wait = TICK_S if deadline is None else max(0.0, min(TICK_S, deadline - clock()))
            item: tuple[Stream, Item | Unavailable] | None = None
            with contextlib.suppress(TimeoutError):
                item = await asyncio.wait_for(queue.get(), timeout=wait)
            now, at = clock(), wall()
            batch: list[Event] = []
            if item is not None:
                stream, got = item
                if isinstance(got, Unavailable):
                    notice = _unavailable(stream, got, now=now, wall=at)
                    (batch if tl.started else deferred).append(notice)
                else:
                    batch += _apply(tl, stream, got, now=now, wall=at)
                if isinstance(got, Synced | Unavailable) and pending:
                    pending.discard(plan.index(stream))
                    if not pending:
                        batch += tl.start(now=now, wall=at) + deferred
            batch += tl.tick(now=now, wall=at)
            for event in batch:
                emit(event)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _unavailable(stream: Stream, got: Unavailable, *, now: float, wall: datetime) -> Event:
    return Event(
        kind="stream_unavailable",
        component=stream.component,
        at=now,
        wall=wall,
        data={"resource": plural(stream.source.resource), "error": got.error},
    )


def _apply(tl: Timeline, stream: Stream, item: Item, *, now: float, wall: datetime) -> list[Event]:
    if isinstance(item, Interrupted):
        if stream.lease:
            tl.lease_interrupted(stream.component, now=now)
        if not tl.started:
            return []
        return [
            Event(
                kind="stream_interrupted",
                component=stream.component,
                at=now,
                wall=wall,
                data={
                    "resource": plural(stream.source.resource),
                    "error": item.error,
                    "retry_in_s": item.retry_in_s,
                },
            )
        ]
    if isinstance(item, Resumed):
        if stream.lease:
            tl.lease_resumed(stream.component)
        if not tl.started:
            return []
        return [
            Event(
                kind="stream_resumed",
                component=stream.component,
                at=now,
                wall=wall,
                data={"resource": plural(stream.source.resource)},
            )
        ]
    if isinstance(item, Upsert) and stream.source.resource is KubeEvent:
        involved = item.obj.get("involvedObject") or {}
        component = involved.get("name") if isinstance(involved, dict) else None
        if component not in tl.components or not str(item.obj.get("reason")).startswith(
            objects.GUARD_EVENT_REASON_PREFIX
        ):
            return []
        event = objects.guard_event(item.obj, component=str(component))
        return tl.guard_event_seen(event, now=now, wall=wall)
    if isinstance(item, Upsert | Delete):
        obj = item.obj
        if stream.source.resource is KubeEvent:
            return []  # an Event that expired (the API server keeps them an hour)
        if stream.lease:
            lease = objects.lease_record(obj) if isinstance(item, Upsert) else None
            return tl.lease_seen(stream.component, lease, now=now, wall=wall)
        meta = obj.get("metadata") or {}
        component = objects.component_of(meta.get("labels") or {}, tl.components)
        if component is None:
            return []
        if isinstance(item, Upsert):
            return tl.pod_seen(objects.candidate(obj, component=component), now=now, wall=wall)
        return tl.pod_gone(component, str(meta.get("name") or ""), now=now, wall=wall)
    return []
