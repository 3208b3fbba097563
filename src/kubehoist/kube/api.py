"""Sends `ApiRequest`s and returns decoded JSON: GET, paged LIST, WATCH streams.

The only code that performs HTTP for kubehoist's own reads. Every failure leaves
this module as a `KubehoistError` from `kube.errors` (never an httpx exception), so
callers handle one kind of error. Async, because watch follows several streams at
once; status uses it too, to send its few requests concurrently.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import httpx2

from kubehoist.errors import KubehoistError
from kubehoist.kube.errors import (
    NotFoundError,
    server_error,
    status_from_body,
    translate,
)
from kubehoist.kube.requests import ApiRequest
from kubehoist.kube.transport import RequestLog

Json = dict[str, Any]

WATCH_SLACK_S: Final = 30.0
"""How long past the server's own `timeoutSeconds` we wait before calling a stream dead."""


@dataclass(frozen=True, kw_only=True)
class ListResult:
    items: tuple[Json, ...]
    resource_version: str


class Api:
    """An async connection to one API server."""

    def __init__(self, *, http: httpx2.AsyncClient, server: str, log: RequestLog) -> None:
        self._http = http
        self.server = server
        self.log = log

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, request: ApiRequest) -> Json:
        """The object, or `NotFoundError`/another `KubehoistError`."""
        try:
            response = await self._http.request(request.method, request.path, params=request.params)
        except httpx2.HTTPError as exc:
            raise translate(exc, call=request.call, server=self.server) from None
        return self._decode(request, response)

    async def get_optional(self, request: ApiRequest) -> Json | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(request)
        except NotFoundError:
            return None

    async def list(self, request: ApiRequest) -> ListResult:
        """All pages of a LIST, and the resourceVersion of the collection."""
        items: list[Json] = []
        params = list(request.params)
        while True:
            try:
                response = await self._http.request(
                    request.method, request.path, params=tuple(params)
                )
            except httpx2.HTTPError as exc:
                raise translate(exc, call=request.call, server=self.server) from None
            body = self._decode(request, response)
            items.extend(item for item in body.get("items") or () if isinstance(item, dict))
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return ListResult(
                    items=tuple(items), resource_version=str(meta.get("resourceVersion") or "")
                )
            params = [(k, v) for k, v in params if k != "continue"] + [("continue", str(token))]

    async def stream(self, request: ApiRequest, *, read_timeout_s: float) -> AsyncIterator[Json]:
        """The decoded lines of a WATCH; ends when the server ends the stream.

        The first item is always `{"type": "OPEN"}` once the server has accepted the
        watch (HTTP 200), so that a caller knows the stream is live before any event.
        """
        timeout = httpx2.Timeout(10.0, read=read_timeout_s)
        try:
            async with self._http.stream(
                request.method, request.path, params=request.params, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    raise server_error(
                        status_from_body(response.status_code, body), call=request.call
                    )
                yield {"type": "OPEN"}
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise KubehoistError(
                            f"watch {request.call.resource}: undecodable event from the server"
                        ) from None
                    if isinstance(event, dict):
                        yield event
        except httpx2.HTTPError as exc:
            raise translate(exc, call=request.call, server=self.server) from None

    def _decode(self, request: ApiRequest, response: httpx2.Response) -> Json:
        if response.status_code >= 400:
            raise server_error(
                status_from_body(response.status_code, response.content), call=request.call
            )
        try:
            body = response.json()
        except ValueError:
            raise KubehoistError(
                f"{request.call.verb} {request.call.resource}: the server's answer is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise KubehoistError(
                f"{request.call.verb} {request.call.resource}: unexpected answer from the server"
            )
        return body
