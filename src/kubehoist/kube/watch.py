"""List-then-watch of one selection of objects, that survives everything but RBAC.

`informer` is kubehoist's watch loop (after kopf's and client-go's reflector), on
lightkube's async watch (`kube.api`): LIST, then WATCH from the list's
resourceVersion. lightkube resumes a stream the server ends (`timeoutSeconds`) from
the last resourceVersion it saw; every `resync_s` the informer closes the watch and
opens it again from its own, which bounds how long a connection that died without
a FIN (a load balancer's fail-over, a partition) can hang on a quiet selection:
lightkube's watch has no read timeout and cannot ask for bookmarks, so silence
alone says nothing. On a failure (the API server away, a network error) it backs
off and LISTs again; on 410 Gone (our resourceVersion fell out of the server's
history: normal after a long disconnect or an etcd compaction) it LISTs at once. A
LIST after the first one reports the difference against what we had, so the
consumer sees every object that appeared, changed or vanished exactly once, with
no duplicate: an object whose resourceVersion we already have is never reported
again.

Errors the server means (403, 401, 404 on the collection) are raised: retrying
cannot fix RBAC. The exception: once a LIST has succeeded, 401/403 are retried with
back-off for a while (8 attempts, about a minute and a half), because an API server
that has just restarted refuses everyone until its RBAC caches are filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from kubehoist.constants import Selector
from kubehoist.kube.api import Api, Json, Kind
from kubehoist.kube.errors import ApiServerError, GoneError, UnreachableError
from kubehoist.kube.retry import RETRY_STATUS, Backoff

DEFAULT_WATCH_TIMEOUT_S: Final = 290
"""The server-side timeout asked for each WATCH request."""
RESYNC_S: Final = 300.0
"""How long one watch runs before it is closed and opened again from our resourceVersion."""
_RETRYABLE_CODES: Final = RETRY_STATUS


@dataclass(frozen=True, kw_only=True)
class Source:
    """What to list and watch."""

    resource: Kind
    namespace: str | None
    labels: Selector | None = None
    fields: Selector | None = None


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
    """The selection is listed again after an `Interrupted`; the changes follow."""


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
    resync_s: float = RESYNC_S,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
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
                    source.resource,
                    namespace=source.namespace,
                    labels=source.labels,
                    fields=source.fields,
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
            stream = api.watch(
                source.resource,
                namespace=source.namespace,
                labels=source.labels,
                fields=source.fields,
                resource_version=rv,
                timeout_s=watch_timeout_s,
            )
            # Bounded: on expiry the loop opens a new watch from `rv` (see module doc).
            # The timeout covers the waits for the next event only, never the consumer's
            # time between two items (a timeout across a `yield` would cancel whatever
            # the consumer awaits then). The back-off starts again once a watch delivers
            # or lasts its period: a LIST that succeeds before a watch that fails does
            # not reset it.
            deadline = asyncio.get_running_loop().time() + resync_s
            async with contextlib.aclosing(stream):
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            kind, obj = await anext(stream)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        attempt = 0
                        break
                    new_rv = resource_version(obj)
                    k = key(obj)
                    if kind in ("ADDED", "MODIFIED"):
                        prev = store.get(k)
                        if prev is None or resource_version(prev) != new_rv:
                            store[k] = obj
                            yield Upsert(obj=obj)
                    elif kind == "DELETED" and store.pop(k, None) is not None:
                        yield Delete(obj=obj)
                    rv = new_rv or rv
                    attempt = 0
        except GoneError:
            rv = None  # too old: relist (a 410 is normal, not a failure)
        except (UnreachableError, ApiServerError) as exc:
            if not listed_once and isinstance(exc, UnreachableError):
                raise  # never reached: a wrong server or a wrong CA, not an outage
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
            rv = None  # what changed meanwhile comes from a LIST and its difference
            yield Interrupted(error=exc.message, retry_in_s=round(delay, 3))
            await sleep(delay)
