"""Building connections: kubeconfig -> counted, TLS-configured clients.

`open_api` gives kubehoist's own async `Api` (status, watch). `connect` and
`connect_async` give lightkube's typed clients for the verbs that write (pivot,
rollback, guard), with kubehoist's field manager and the same request counting. All
three honour `--kubeconfig`, `--context` and `KUBECONFIG` through `kube.config`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx2
from lightkube import AsyncClient, Client
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig

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
