"""kubehoist's async reads on lightkube's `AsyncClient`: GET, paged LIST, WATCH.

Objects come back as JSON-shaped dicts, the form `kube.objects` decodes (the same
decoders serve the guard's lightkube reads and status's); every failure leaves as a
`KubehoistError` from `kube.errors` naming the call, never as an httpx or lightkube
exception. Selectors are `constants.Selector`s: one canonical text, and the terms
lightkube builds its query from.

What lightkube's watch does not do, and `kube.watch.informer` does around it: a
watch's read has no timeout there (`GenericClient._watch_timeout.read = None`) and
bookmarks cannot be asked for, so a connection that dies without a FIN on a quiet
selection would hang forever; the informer bounds every watch (`RESYNC_S`) and
resumes it. lightkube resumes a watch the server closed (`timeoutSeconds`) by itself,
from the last resourceVersion it decoded; an ERROR event (410 Gone) is raised here
as `GoneError`, and the informer lists again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx2
import msgspec
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import api_info
from lightkube.types import on_error_raise

from kubehoist.constants import Selector
from kubehoist.errors import KubehoistError
from kubehoist.kube.errors import Call, NotFoundError, api_errors, translate
from kubehoist.kube.transport import RequestLog

Json = dict[str, Any]
Kind = type[Any]
"""A lightkube resource class (`Pod`, `Lease` ...): lightkube's overloads type `get`,
`list` and `watch` per namespaced or global class; here one signature serves both."""

LIST_CHUNK: Final = 500
"""Objects per LIST page, so that no single answer is unbounded."""


@dataclass(frozen=True, kw_only=True)
class ListResult:
    items: tuple[Json, ...]
    resource_version: str


def plural(res: Kind) -> str:
    """The resource's plural name, as kubectl prints it (pods, leases)."""
    return str(api_info(res).plural)


def _selector(sel: Selector | None) -> Any:
    return sel.pairs() if sel else None


@contextmanager
def _decoded(call: Call) -> Iterator[None]:
    """lightkube decodes into typed models: an answer that does not fit them (a field
    missing that the API always sends) is one line naming the call, not a traceback."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise KubehoistError(
            f"{call.verb} {call.resource}: the server's answer does not decode: {exc}"
        ) from None


class Api:
    """Reads from one API server through a lightkube `AsyncClient`."""

    def __init__(self, client: AsyncClient, *, server: str, log: RequestLog) -> None:
        self.client = client
        self.server = server
        self.log = log

    async def aclose(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, res: Kind, *, name: str, namespace: str | None = None) -> Json:
        """The object, or `NotFoundError`/another `KubehoistError`."""
        call = Call(verb="get", resource=plural(res), namespace=namespace, name=name)
        with _decoded(call), api_errors(call, server=self.server):
            obj = await self.client.get(res, name, namespace=namespace)
        return dict(obj.to_dict())

    async def get_optional(
        self, res: Kind, *, name: str, namespace: str | None = None
    ) -> Json | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(res, name=name, namespace=namespace)
        except NotFoundError:
            return None

    async def list(
        self,
        res: Kind,
        *,
        namespace: str | None = None,
        labels: Selector | None = None,
        fields: Selector | None = None,
        chunk_size: int = LIST_CHUNK,
    ) -> ListResult:
        """All pages of a LIST, and the resourceVersion of the collection."""
        call = Call(verb="list", resource=plural(res), namespace=namespace)
        listing = self.client.list(
            res,
            namespace=namespace,
            labels=_selector(labels),
            fields=_selector(fields),
            chunk_size=chunk_size,
        )
        with _decoded(call), api_errors(call, server=self.server):
            items = tuple([dict(obj.to_dict()) async for obj in listing])
            version = str(listing.resourceVersion or "")
        return ListResult(items=items, resource_version=version)

    async def watch(
        self,
        res: Kind,
        *,
        namespace: str | None = None,
        labels: Selector | None = None,
        fields: Selector | None = None,
        resource_version: str,
        timeout_s: int,
    ) -> AsyncGenerator[tuple[str, Json]]:
        """(event type, object) from `resource_version` on, forever (lightkube resumes a
        stream the server ends); a failure or an ERROR event is raised."""
        call = Call(verb="watch", resource=plural(res), namespace=namespace)
        stream = self.client.watch(
            res,
            namespace=namespace,
            labels=_selector(labels),
            fields=_selector(fields),
            server_timeout=timeout_s,
            resource_version=resource_version,
            on_error=on_error_raise,
        )
        try:
            with _decoded(call):
                async for kind, obj in stream:
                    yield str(kind), dict(obj.to_dict())
        except (httpx2.HTTPError, OSError, ApiError) as exc:
            raise translate(exc, call=call, server=self.server) from None
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator
