"""When a request to the API server is sent again, and for how long.

An API server that goes away for a few seconds (a restart, an HA fail-over behind the
endpoint, an upgrade) is ridden out the way client-go does, with the rule made
explicit here so that it can be tested on its own:

- a request that never reached the server (the connection was refused or could not
  be set up: `httpx2.ConnectError`, `ConnectTimeout`, `PoolTimeout`) is sent again
  whatever its verb; so is one the server answered 429 (rejected before it was
  handled, like client-go's retry on a `Retry-After` answer);
- a request that may have reached it (reset, EOF, read timeout, a 5xx answer) is sent
  again only when repeating it cannot do harm: reads (GET), deletes (a second delete
  of a deleted object answers 404, which the callers take as done), server-side apply
  and merge patches (applying the same patch twice gives the same object). client-go
  retries a GET on a connection reset or an EOF (rest/request.go, `isErrRetryableFunc`)
  and leaves writes alone; server-side apply and deletes are added here because the
  API defines them as idempotent. A create (POST) or an update carrying a
  resourceVersion (PUT) is not: the caller decides (pivot/state.py reads back).
- 401, 403 and 404 within `SETTLE_S` of a failure that said the server was away:
  an API server that has just come back answers so for about a second, before its
  caches are filled (measured on the lab's kube-apiserver, see `SETTLING_STATUS`); the
  request was refused, not done, so any verb is sent again.
- Anything else (400, 409, 422 ..., and 401/403/404 from a server that was not just
  away) is the server's answer: never repeated.

Between attempts: exponential back-off with jitter (`Backoff`), capped, for as long as
the retry budget allows: the client's (`--timeout`), or less inside a wait that has its
own deadline (`within`). Each attempt is counted in the request log, so `-v` shows them.
PURE but for the deadline, which lives in a context variable.
"""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import httpx2

RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "no": the server is starting, stopping,
overloaded or behind a proxy that lost it."""

NOT_HANDLED_STATUS: Final = frozenset({429})
"""Answers after which the server certainly did not act on the request."""

SETTLING_STATUS: Final = frozenset({401, 403, 404})
"""What a kube-apiserver answers right after it came back, for objects that exist and
a user it will authorize a moment later. Measured in the lab (v1.36.3, a GET of the
controller manager's Lease every 50 ms as the admin while the supervised
kube-apiserver restarts: bench/apiserver_restart.py, figures in docs/pivot.md): after
SIGKILL, 403 Forbidden for 1.3 s once it answered again; after SIGTERM, 404 NotFound
for 0.9 s."""

SETTLE_S: Final = 10.0
"""How long after a failure that said the server was away a 401/403/404 is taken for
a server still settling (several times what was measured, still short enough that a
real refusal is reported within seconds)."""

NOT_SENT: Final = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
"""Failures before the request left: the connection was never made."""
_MAYBE_SENT: Final = (
    httpx2.ReadError,
    httpx2.WriteError,
    httpx2.ReadTimeout,
    httpx2.WriteTimeout,
    httpx2.RemoteProtocolError,
    httpx2.CloseError,
)
_MERGE_PATCHES: Final = (
    "application/apply-patch+yaml",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential back-off with jitter: `initial_s`, ×`factor` each attempt, capped at
    `max_s`, each delay scaled by a random factor in [1 - jitter, 1 + jitter]."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, *, rand: float) -> float:
        base = min(self.max_s, self.initial_s * self.factor**attempt)
        return base * (1 - self.jitter + 2 * self.jitter * rand)


CLIENT_BACKOFF: Final = Backoff(initial_s=0.2, factor=2.0, max_s=4.0, jitter=0.3)
"""For single requests: an API server back after a few seconds is seen within ~4 s
(client-go's informers back off from 0.8 s up to 30 s; a cut-over that waits with no
leader should not sleep that long after the server is back)."""


def repeatable(method: str, content_type: str = "") -> bool:
    """Whether sending this request twice has the effect of sending it once."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return True
    if method == "PATCH":
        return content_type.split(";", 1)[0].strip().lower() in _MERGE_PATCHES
    return False


def retry_error(exc: BaseException, *, method: str, content_type: str = "") -> bool:
    """Whether a request that failed with `exc` (no answer) may be sent again. A server
    whose certificate this client does not trust is no outage: never again."""
    if untrusted(exc):
        return False
    if isinstance(exc, NOT_SENT):
        return True
    return isinstance(exc, _MAYBE_SENT) and repeatable(method, content_type)


def untrusted(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate was not trusted
    (the kubeconfig's CA is not the one that signed it, or the name does not match)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def retry_status(status: int, *, method: str, content_type: str = "") -> bool:
    """Whether a request the server answered with `status` may be sent again."""
    if status in NOT_HANDLED_STATUS:
        return True
    return status in RETRY_STATUS and repeatable(method, content_type)


def retry_settling(status: int, *, since_away_s: float | None) -> bool:
    """Whether an answer `status`, `since_away_s` after the server was last seen away
    (None: never), is taken for a server still settling (`SETTLING_STATUS`)."""
    return status in SETTLING_STATUS and since_away_s is not None and since_away_s < SETTLE_S


def away(exc_or_status: BaseException | int) -> bool:
    """Whether a failure says the server is away (no answer at all, or 429/5xx)."""
    if isinstance(exc_or_status, int):
        return exc_or_status in RETRY_STATUS
    return isinstance(exc_or_status, httpx2.TransportError)


# --- the deadline ------------------------------------------------------------------------
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "kubehoist_retry_deadline", default=None
)


def deadline() -> float | None:
    """The time.monotonic() after which no request is sent again (None: the client's)."""
    return _DEADLINE.get()


@contextmanager
def within(seconds: float, *, clock: float | None = None) -> Iterator[None]:
    """Requests in this block are retried at most until `seconds` from now (or an outer
    block's deadline, whichever is sooner): a wait with a timeout never waits longer
    because a request inside it was being retried."""
    now = time.monotonic() if clock is None else clock
    outer = _DEADLINE.get()
    mine = now + max(0.0, seconds)
    token = _DEADLINE.set(mine if outer is None else min(outer, mine))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long one request is retried (`budget_s` from its first attempt, shortened by
    `within`) and how the attempts are spaced."""

    budget_s: float
    backoff: Backoff = CLIENT_BACKOFF

    def remaining(self, *, started: float, now: float) -> float:
        """Seconds left to retry a request first sent at `started` (≤ 0: none)."""
        end = started + self.budget_s
        outer = deadline()
        if outer is not None:
            end = min(end, outer)
        return end - now

    def next_delay(
        self, *, attempt: int, started: float, now: float, rand: float, hint_s: float = 0.0
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1` (at least `hint_s`, the server's
        Retry-After), or None when the budget is spent. The wait is cut to end at the
        deadline, so that a last attempt is made there."""
        left = self.remaining(started=started, now=now)
        if left <= 0:
            return None
        return min(max(self.backoff.delay(attempt, rand=rand), hint_s), left)
