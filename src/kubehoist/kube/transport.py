"""The HTTP transport under every API request: TLS from the kubeconfig, and a tally.

Every request kubehoist makes goes through one `CountingTransport` (sync) or
`AsyncCountingTransport`, which counts it in a `RequestLog` and, when asked, prints
one line per request on stderr (`-v`), so "how many requests does status make" is
measured, not guessed. Tests put an `httpx2.MockTransport` inside instead of TLS.

The same transport bounds every WATCH that asks the server to end it
(`timeoutSeconds`): lightkube reads a watch with no read timeout, so a connection that
died without a FIN (pinned through a load balancer to an API server whose node
dropped off the network) would keep a watch silent for good, and closing the client
from another thread does not wake a read blocked on it. With a read timeout of the
server's own timeout plus `WATCH_READ_GRACE_S`, a healthy watch always ends first
(the server closes it, lightkube resumes it), and a dead one fails within that bound.
"""

from __future__ import annotations

import random
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

import httpx2
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import User

from kubehoist.kube.errors import parse_call
from kubehoist.kube.retry import RetryPolicy, away, retry_error, retry_settling, retry_status

WATCH_READ_GRACE_S = 10.0
"""How much later than its `timeoutSeconds` a silent WATCH's read times out."""


def bound_watch_read(request: httpx2.Request) -> None:
    """Give a WATCH with `timeoutSeconds` a read timeout (see the module docstring)."""
    params = request.url.params
    if params.get("watch") not in ("true", "1"):
        return
    try:
        server_s = float(params.get("timeoutSeconds") or "")
    except ValueError:
        return
    if server_s <= 0:
        return
    timeout = dict(request.extensions.get("timeout") or {})
    if timeout.get("read") is None:
        timeout["read"] = server_s + WATCH_READ_GRACE_S
        request.extensions["timeout"] = timeout


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request as sent: method, path and query, and the status (None if it failed)."""

    method: str
    path: str
    query: str
    status: int | None
    elapsed_s: float


@dataclass(kw_only=True)
class RequestLog:
    """Counts the requests of one client; `echo` receives a line per request when set,
    each of `listeners` the record. Only the last `keep` records are kept: a guard's
    client lives for months."""

    echo: Callable[[str], None] | None = None
    keep: int = 1000
    listeners: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    count: int = 0
    records: deque[RequestRecord] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.records = deque(maxlen=self.keep)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)
            self.count += 1
        for listener in self.listeners:
            listener(record)
        if self.echo is not None:
            status = record.status if record.status is not None else "error"
            query = f"?{unquote_plus(record.query)}" if record.query else ""
            self.echo(
                f"{record.method} {record.path}{query} {status} in {record.elapsed_s * 1000:.0f} ms"
            )


def verb_of(record: RequestRecord) -> str:
    """PURE: the API verb of a logged request as the API server names it (get, list,
    watch, create, update, patch, delete, deletecollection): `errors.parse_call`."""
    params = dict(
        (unquote_plus(k), unquote_plus(v))
        for k, _, v in (part.partition("=") for part in record.query.split("&") if part)
    )
    return parse_call(record.method, record.path, params).verb


def stderr_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _record(request: httpx2.Request, status: int | None, start: float) -> RequestRecord:
    return RequestRecord(
        method=request.method,
        path=request.url.path,
        query=request.url.query.decode() if isinstance(request.url.query, bytes) else "",
        status=status,
        elapsed_s=time.monotonic() - start,
    )


class CountingTransport(httpx2.BaseTransport):
    """Wraps a transport and logs every request it handles."""

    def __init__(self, inner: httpx2.BaseTransport, log: RequestLog) -> None:
        self._inner = inner
        self.log = log

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        bound_watch_read(request)
        start = time.monotonic()
        try:
            response = self._inner.handle_request(request)
        except Exception:
            self.log.add(_record(request, None, start))
            raise
        self.log.add(_record(request, response.status_code, start))
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncCountingTransport(httpx2.AsyncBaseTransport):
    """Async twin of `CountingTransport`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, log: RequestLog) -> None:
        self._inner = inner
        self.log = log

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        bound_watch_read(request)
        start = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception:
            self.log.add(_record(request, None, start))
            raise
        self.log.add(_record(request, response.status_code, start))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class RetryingTransport(httpx2.BaseTransport):
    """Sends a request again, with back-off, while `kube.retry` says it may be: the
    API server refused the connection, reset it, or answered 429/5xx. Wraps the counting
    transport, so every attempt is in the request log. The last failure (an exception
    or the last answer) is what the caller gets once the budget is spent."""

    def __init__(
        self,
        inner: httpx2.BaseTransport,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._inner = inner
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._away_at: float | None = None
        """When a request of this client last found the server away (see
        `kube.retry.SETTLING_STATUS`)."""

    def _since_away(self) -> float | None:
        return None if self._away_at is None else self._clock() - self._away_at

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = self._clock()
        attempt = 0
        content_type = request.headers.get("content-type", "")
        while True:
            try:
                response = self._inner.handle_request(request)
                if _whole(request):
                    # Read the body here, where a reset in the middle of it can still be
                    # retried (the client would read it after this transport returned).
                    response.read()
            except httpx2.TransportError as exc:
                if away(exc):
                    self._away_at = self._clock()
                if not retry_error(exc, method=request.method, content_type=content_type):
                    raise
                delay = self._delay(attempt, started, None)
                if delay is None:
                    raise
            else:
                status = response.status_code
                if away(status):
                    self._away_at = self._clock()
                if not retry_status(
                    status, method=request.method, content_type=content_type
                ) and not retry_settling(status, since_away_s=self._since_away()):
                    return response
                delay = self._delay(attempt, started, response)
                if delay is None:
                    return response
                response.close()
            self._sleep(delay)
            attempt += 1

    def _delay(
        self, attempt: int, started: float, response: httpx2.Response | None
    ) -> float | None:
        # The server's own hint counts (kube-apiserver answers 429 with `Retry-After: 1`).
        after = response.headers.get("retry-after", "") if response is not None else ""
        return self.policy.next_delay(
            attempt=attempt,
            started=started,
            now=self._clock(),
            rand=self._rand(),
            hint_s=float(after) if after.isdigit() else 0.0,
        )

    def close(self) -> None:
        self._inner.close()


def _whole(request: httpx2.Request) -> bool:
    """Whether the answer is read whole: a GET that is not a stream (a watch, a log
    followed), which lightkube reads entirely anyway."""
    params = request.url.params
    return (
        request.method == "GET"
        and params.get("watch") not in ("true", "1")
        and params.get("follow") not in ("true", "True", "1")
    )


def tls_transport(config: SingleConfig) -> httpx2.HTTPTransport:
    """A plain transport with the kubeconfig's CA and client certificate."""
    return httpx2.HTTPTransport(verify=_ssl_context(config))


def async_tls_transport(config: SingleConfig) -> httpx2.AsyncHTTPTransport:
    return httpx2.AsyncHTTPTransport(verify=_ssl_context(config))


def _ssl_context(config: SingleConfig) -> ssl.SSLContext:
    # httpx ignores `verify` once a transport is given, so the TLS context has to be
    # built here, the same way lightkube builds it for its own default transport.
    return verify_cluster(config.cluster, config.user or User(), config.abs_file, trust_env=False)
