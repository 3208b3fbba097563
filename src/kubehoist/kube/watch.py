"""List-then-watch of one selection of objects, that survives everything but RBAC.

`informer` is kubehoist's watch loop (after kopf's and client-go's reflector): LIST,
then WATCH from the list's resourceVersion with bookmarks; when the stream ends
(server timeout, API server restart, network error) resume from the last
resourceVersion seen, backing off on errors; on 410 Gone (our resourceVersion fell
out of the server's history — normal after a long disconnect or an etcd compaction)
LIST again and report the difference against what we had, so the consumer sees
every object that appeared, changed or vanished exactly once, with no duplicate: an
object whose resourceVersion we already have is never reported again.

Errors the server means (403, 401, 404 on the collection) are raised: retrying
cannot fix RBAC. The exception: once a LIST has succeeded, 401/403 are retried with
back-off for a while (8 attempts, about a minute and a half), because an API server
that has just restarted refuses everyone until its RBAC caches are filled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from kubehoist.kube.api import WATCH_SLACK_S, Api, Json
from kubehoist.kube.errors import (
    ApiServerError,
    GoneError,
    UnreachableError,
    server_error,
    status_from_body,
)
from kubehoist.kube.requests import Resource, list_, watch
from kubehoist.kube.retry import RETRY_STATUS, Backoff

DEFAULT_WATCH_TIMEOUT_S: Final = 290
_RETRYABLE_CODES: Final = RETRY_STATUS


@dataclass(frozen=True, kw_only=True)
class Source:
    """What to list and watch."""

    resource: Resource
    namespace: str | None
    labels: str = ""
    fields: str = ""


@dataclass(frozen=True, kw_only=True)
class Upsert:
    """An object appeared or changed (its resourceVersion is new to us)."""

    obj: Json


@dataclass(frozen=True, kw_only=True)
class Delete:
    """An object is gone (last state we had, or the one in the DELETED event)."""

    obj: Json


@dataclass(frozen=True, kw_only=True)
class Synced:
    """What we hold now equals a fresh LIST; `relist` is false for the first one."""

    relist: bool


@dataclass(frozen=True, kw_only=True)
class Interrupted:
    """The stream failed; we retry in `retry_in_s`. Nothing is seen until `Resumed`."""

    error: str
    retry_in_s: float


@dataclass(frozen=True, kw_only=True)
class Resumed:
    """A stream is open again after an `Interrupted` (resumed or relisted)."""


Item = Upsert | Delete | Synced | Interrupted | Resumed


def key(obj: Json) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def resource_version(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def diff(old: dict[str, Json], new: dict[str, Json]) -> list[Item]:
    """What changed between two complete views (a relist): deletions first."""
    items: list[Item] = [Delete(obj=o) for k, o in old.items() if k not in new]
    for k, o in new.items():
        prev = old.get(k)
        if prev is None or resource_version(prev) != resource_version(o):
            items.append(Upsert(obj=o))
    return items


async def informer(
    api: Api,
    source: Source,
    *,
    watch_timeout_s: int = DEFAULT_WATCH_TIMEOUT_S,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
    min_stream_s: float = 1.0,
    max_refusals: int = 8,
) -> AsyncIterator[Item]:
    """Forever: the changes to `source`, as `Item`s (see the module docstring)."""
    backoff = backoff or Backoff()  # 0.5 s, 1 s, 2 s ... capped at 30 s
    store: dict[str, Json] = {}
    rv: str | None = None
    listed_once = False
    attempt = 0
    interrupted = False
    while True:
        try:
            if rv is None:
                result = await api.list(
                    list_(
                        source.resource,
                        namespace=source.namespace,
                        labels=source.labels,
                        fields=source.fields,
                    )
                )
                fresh = {key(o): o for o in result.items}
                changes = diff(store, fresh)
                store, rv = fresh, result.resource_version
                if interrupted:
                    interrupted = False
                    yield Resumed()
                for change in changes:
                    yield change
                yield Synced(relist=listed_once)
                listed_once = True
                attempt = 0
            request = watch(
                source.resource,
                namespace=source.namespace,
                labels=source.labels,
                fields=source.fields,
                resource_version=rv,
                timeout_s=watch_timeout_s,
            )
            opened = clock()
            async for event in api.stream(request, read_timeout_s=watch_timeout_s + WATCH_SLACK_S):
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "OPEN":  # kube.api: the server accepted the watch
                    attempt = 0
                    if interrupted:
                        interrupted = False
                        yield Resumed()
                    continue
                if kind == "ERROR":
                    raise server_error(status_from_body(410, obj), call=request.call)
                new_rv = resource_version(obj)
                if kind == "BOOKMARK":
                    rv = new_rv or rv
                    continue
                k = key(obj)
                if kind in ("ADDED", "MODIFIED"):
                    prev = store.get(k)
                    if prev is None or resource_version(prev) != new_rv:
                        store[k] = obj
                        yield Upsert(obj=obj)
                elif kind == "DELETED" and store.pop(k, None) is not None:
                    yield Delete(obj=obj)
                rv = new_rv or rv
            # The server ended the stream (timeoutSeconds): resume from rv. A stream that
            # ends at once (a proxy cutting it) must not turn this loop into a spin.
            if clock() - opened < min_stream_s:
                await sleep(min_stream_s)
        except GoneError:
            rv = None  # too old: relist (a 410 is normal, not a failure)
        except (UnreachableError, ApiServerError) as exc:
            if isinstance(exc, ApiServerError) and exc.status.code not in _RETRYABLE_CODES:
                # A restarting API server refuses (401/403) until its authenticator and
                # RBAC caches are warm: after a first successful LIST, a refusal is
                # retried for a while; on the first LIST, or for too long, it is real.
                if not listed_once or exc.status.code not in (401, 403):
                    raise
                if attempt >= max_refusals:
                    raise
            delay = backoff.delay(attempt, rand=rand())
            attempt += 1
            interrupted = True
            yield Interrupted(error=exc.message, retry_in_s=round(delay, 3))
            await sleep(delay)
