"""Building connections: kubeconfig -> counted, TLS-configured clients.

`open_api` gives kubehoist's own async `Api` (status, watch). `connect` and
`connect_async` give lightkube's typed clients for the verbs that write (pivot,
rollback, guard), with kubehoist's field manager and the same request counting. All
three honour `--kubeconfig`, `--context` and `KUBECONFIG` through `kube.config`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import httpx2
from lightkube import AsyncClient, Client
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from kubehoist.constants import FIELD_MANAGER
from kubehoist.kube.api import Api
from kubehoist.kube.config import load_config
from kubehoist.kube.transport import (
    AsyncCountingTransport,
    CountingTransport,
    RequestLog,
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
    """kubehoist's async reader. `transport` replaces TLS (tests pass a MockTransport)."""
    inner = transport if transport is not None else async_tls_transport(where.config)
    params = client_adapter.ConnectionParams(
        timeout=httpx2.Timeout(where.timeout_s),
        trust_env=False,
        transport=AsyncCountingTransport(inner, where.log),  # type: ignore[arg-type]
    )
    http = client_adapter.AsyncClient(where.config, params)
    return Api(http=http, server=where.server, log=where.log)


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


def is_not_found(exc: ApiError) -> bool:
    return exc.status.code == 404


@contextmanager
def absent_ok() -> Iterator[None]:
    """Swallow a 404 from lightkube: the object is already gone, or never was (for
    deletes and scale-downs that are idempotent)."""
    try:
        yield
    except ApiError as exc:
        if not is_not_found(exc):
            raise


def get_or_none(client: Client, kind: type[_R], name: str, *, namespace: str) -> _R | None:
    """`client.get` of a namespaced object, or None when it does not exist."""
    try:
        return client.get(kind, name, namespace=namespace)
    except ApiError as exc:
        if is_not_found(exc):
            return None
        raise
