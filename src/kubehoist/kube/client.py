"""Building connections: kubeconfig -> counted, TLS-configured clients.

`open_api` gives kubehoist's own async `Api` (status, watch). `connect` and
`connect_async` give lightkube's typed clients, with kubehoist's field manager and the
same request counting. `session` gives the client of the verbs that change a cluster
(pivot, rollback, guard install and uninstall): a lightkube `Client` whose requests
are retried through an API server outage (`kube.retry`) and whose every failure is a
`KubehoistError` naming the call (`kube.errors`), so that no API error leaves those
verbs as a traceback or slips past pivot's automatic rollback. All of them honour
`--kubeconfig`, `--context` and `KUBECONFIG` through `kube.config`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
from lightkube import AsyncClient, Client
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from kubehoist.constants import FIELD_MANAGER
from kubehoist.kube.api import Api
from kubehoist.kube.config import load_config
from kubehoist.kube.errors import ApiServerError, Call, call_of, status_code, translate
from kubehoist.kube.retry import RetryPolicy
from kubehoist.kube.transport import (
    AsyncCountingTransport,
    CountingTransport,
    RequestLog,
    RetryingTransport,
    async_tls_transport,
    tls_transport,
)

DEFAULT_TIMEOUT_S = 10.0
_R = TypeVar("_R", bound=NamespacedResource)


@dataclass(frozen=True, kw_only=True)
class Target:
    """Which cluster to talk to and how; `log` counts every request made through it."""

    config: SingleConfig
    log: RequestLog = field(default_factory=RequestLog)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def server(self) -> str:
        return self.config.cluster.server


def target(
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    log: RequestLog | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Target:
    """Resolve the kubeconfig like kubectl (see `kube.config`)."""
    return Target(
        config=load_config(kubeconfig=kubeconfig, context=context),
        log=log if log is not None else RequestLog(),
        timeout_s=timeout_s,
    )


def open_api(where: Target, *, transport: httpx2.AsyncBaseTransport | None = None) -> Api:
    """kubehoist's async reader (status, watch): a lightkube `AsyncClient`, counted in
    `where.log`. `transport` replaces TLS (tests pass a MockTransport)."""
    return Api(connect_async(where, transport=transport), server=where.server, log=where.log)


def connect(
    where: Target, *, namespace: str | None = None, transport: httpx2.BaseTransport | None = None
) -> Client:
    """A lightkube `Client` with kubehoist's field manager, counted in `where.log`."""
    inner = transport if transport is not None else tls_transport(where.config)
    return Client(
        where.config,
        namespace=namespace,
        timeout=httpx2.Timeout(where.timeout_s),
        field_manager=FIELD_MANAGER,
        trust_env=False,
        transport=CountingTransport(inner, where.log),
    )


def connect_async(
    where: Target,
    *,
    namespace: str | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> AsyncClient:
    """The async twin of `connect`."""
    inner = transport if transport is not None else async_tls_transport(where.config)
    return AsyncClient(
        where.config,
        namespace=namespace,
        timeout=httpx2.Timeout(where.timeout_s),
        field_manager=FIELD_MANAGER,
        trust_env=False,
        transport=AsyncCountingTransport(inner, where.log),
    )


class Session(Client):
    """A lightkube `Client` for the verbs that change a cluster: every request goes
    through `RetryingTransport` (see `kube.retry`), and every failure leaves a call as a
    `KubehoistError` from `kube.errors` — `NotFoundError`, `ConflictError`,
    `UnreachableError` ... — with the call and the object named, never as an httpx or
    lightkube exception. `list` returns a list (read whole inside the mapping: a lazy
    iterator would fail later, outside it)."""

    def __init__(self, *args: Any, server: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except (httpx2.HTTPError, ApiError, OSError) as exc:
            raise translate(exc, call=_call(exc), server=self.server, name_call=True) from None

    def get(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().get(*args, **kwargs)

    def list(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return list(super().list(*args, **kwargs))

    def create(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().create(*args, **kwargs)

    def replace(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().replace(*args, **kwargs)

    def patch(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().patch(*args, **kwargs)

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().apply(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().delete(*args, **kwargs)

    def deletecollection(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            return super().deletecollection(*args, **kwargs)

    def log(self, *args: Any, **kwargs: Any) -> Any:
        with self._mapped():
            lines = super().log(*args, **kwargs)
        return self._mapped_lines(lines)

    def _mapped_lines(self, lines: Iterator[str]) -> Iterator[str]:
        with self._mapped():
            yield from lines


def _call(exc: BaseException) -> Call:
    """The call that failed, from the request the exception carries."""
    request: httpx2.Request | None = None
    if isinstance(exc, httpx2.HTTPStatusError):
        request = exc.response.request if exc.response is not None else None
    elif isinstance(exc, httpx2.RequestError):
        try:
            request = exc.request
        except RuntimeError:  # raised outside of a request
            request = None
    if request is None:
        return Call(verb="call", resource="the API")
    return call_of(request)


def session(
    where: Target,
    *,
    retry_for_s: float,
    namespace: str | None = None,
    transport: httpx2.BaseTransport | None = None,
    retry: RetryPolicy | None = None,
) -> Session:
    """A `Session` on `where`: requests retried for up to `retry_for_s` each (less inside
    a `kube.retry.within` block). `transport` replaces TLS (tests pass a MockTransport)."""
    inner = transport if transport is not None else tls_transport(where.config)
    counted = CountingTransport(inner, where.log)
    policy = retry if retry is not None else RetryPolicy(budget_s=retry_for_s)
    return Session(
        where.config,
        namespace=namespace,
        timeout=httpx2.Timeout(where.timeout_s),
        field_manager=FIELD_MANAGER,
        trust_env=False,
        transport=RetryingTransport(counted, policy),
        server=where.server,
    )


def is_not_found(exc: BaseException) -> bool:
    """A 404, from lightkube (`ApiError`) or from a `Session` (`NotFoundError`)."""
    return status_code(exc) == 404


@contextmanager
def absent_ok() -> Iterator[None]:
    """Swallow a 404: the object is already gone, or never was (for deletes and
    scale-downs that are idempotent)."""
    try:
        yield
    except (ApiError, ApiServerError) as exc:
        if not is_not_found(exc):
            raise


def get_or_none(client: Client, kind: type[_R], name: str, *, namespace: str) -> _R | None:
    """`client.get` of a namespaced object, or None when it does not exist."""
    try:
        return client.get(kind, name, namespace=namespace)
    except (ApiError, ApiServerError) as exc:
        if is_not_found(exc):
            return None
        raise
