"""The one error strategy of the kube layer: API and transport failures -> KubehoistError.

Every request is described by a `Call` (verb, resource, namespace, name) before it is
sent, so that a failure can say, in kubectl's words, what was refused:

    cannot reach the API server at https://127.0.0.1:16443: connection refused
    forbidden: cannot list pods in namespace kube-system (user "jane")
    Error from server (NotFound): leases "kube-controller-manager" not found

Callers never catch httpx or lightkube exceptions themselves; they wrap requests in
`api_errors(call, server=...)` (or call `translate`). The translation is pure.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube.core.exceptions import ApiError

from kubehoist.errors import KubehoistError
from kubehoist.kube.retry import NOT_SENT, RETRY_STATUS


@dataclass(frozen=True, kw_only=True)
class Call:
    """What a request was for, in the terms an error message needs."""

    verb: str
    """Kubernetes verb: get, list, watch, create, patch, update, delete."""
    resource: str
    """Plural resource name as kubectl prints it: pods, leases, deployments."""
    namespace: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ServerStatus:
    """The parts of a `meta/v1 Status` body an error message uses."""

    code: int
    reason: str
    message: str


class ApiServerError(KubehoistError):
    """The API server answered, and the answer was an error; `status` keeps it."""

    def __init__(self, message: str, *, status: ServerStatus) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(ApiServerError):
    """404: the named object (or its namespace) does not exist."""


class ForbiddenError(ApiServerError):
    """403: RBAC refused the verb on the resource."""


class ConflictError(ApiServerError):
    """409: the object exists already (create), or changed since it was read (update)."""


class GoneError(ApiServerError):
    """410: a watch's resourceVersion is too old; relist."""


class UnreachableError(KubehoistError):
    """No answer at all: connection refused, TLS failure, timeout. `maybe_sent`: the
    request may have reached the server (the connection broke after it left), so a
    write may have been done; False when the connection was never made."""

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


_USER_RE = re.compile(r'User "([^"]*)"')
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_from_body(code: int, body: bytes | str | Mapping[str, Any] | None) -> ServerStatus:
    """Read a Status object from a response body, tolerating bodies that are not one."""
    data: Any = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except ValueError:
            text = body.decode(errors="replace") if isinstance(body, bytes) else body
            return ServerStatus(
                code=code, reason=_REASONS.get(code, "Unknown"), message=text.strip()
            )
    if not isinstance(data, Mapping):
        return ServerStatus(code=code, reason=_REASONS.get(code, "Unknown"), message="")
    return ServerStatus(
        code=int(data.get("code") or code),
        reason=str(data.get("reason") or _REASONS.get(code, "Unknown")),
        message=str(data.get("message") or ""),
    )


def server_error(status: ServerStatus, *, call: Call, name_call: bool = False) -> ApiServerError:
    """The message for an error answer, worded like kubectl's."""
    where = f" in namespace {call.namespace}" if call.namespace else ""
    if status.code == 404:
        what = (
            f'{call.resource} "{call.name}" not found{where}'
            if call.name
            else status.message or f"{call.resource} not found{where}"
        )
        return NotFoundError(f"Error from server (NotFound): {what}", status=status)
    if status.code == 403:
        match = _USER_RE.search(status.message)
        user = f' (user "{match.group(1)}")' if match else ""
        return ForbiddenError(
            f"forbidden: cannot {call.verb} {call.resource}{where}{user}", status=status
        )
    if status.code == 401:
        return ApiServerError(
            "you must be logged in to the server (Unauthorized): the kubeconfig's "
            "credentials were refused",
            status=status,
        )
    if status.code == 410:
        return GoneError(f"Error from server (Expired): {status.message}", status=status)
    detail = status.message or f"{call.verb} {call.resource} failed with HTTP {status.code}"
    if status.code == 409:
        return ConflictError(f"Error from server (Conflict): {detail}", status=status)
    if name_call:
        detail += f" ({describe(call)})"
    return ApiServerError(f"Error from server ({status.reason}): {detail}", status=status)


def describe(call: Call) -> str:
    """The call in a few words: `get leases kube-system/kube-controller-manager`."""
    what = "/".join(p for p in (call.namespace, call.name) if p)
    return f"{call.verb} {call.resource}" + (f" {what}" if what else "")


def unreachable(exc: BaseException, *, server: str, call: Call | None = None) -> UnreachableError:
    """No usable answer from the server: say why in a few words (and, given `call`,
    what was being asked)."""
    during = f" ({describe(call)})" if call is not None else ""
    return UnreachableError(
        f"cannot reach the API server at {server}: {_why(exc)}{during}",
        maybe_sent=not isinstance(exc, NOT_SENT),
    )


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an error answer, from lightkube's `ApiError` or ours; None for
    anything else (no answer, or not an API error)."""
    if isinstance(exc, ApiServerError):
        return exc.status.code
    if isinstance(exc, ApiError):
        code = exc.status.code if exc.status is not None else None
        if code is None and exc.response is not None:
            code = exc.response.status_code
        return int(code) if code is not None else None
    return None


def maybe_done(exc: BaseException) -> bool:
    """Whether a write that failed with `exc` may all the same have been done: its
    answer was lost on the way (the connection broke after the request left), or the
    server failed while handling it (5xx)."""
    if isinstance(exc, UnreachableError):
        return exc.maybe_sent
    code = status_code(exc)
    return code is not None and code >= 500


def transient(exc: BaseException) -> bool:
    """Whether a failure may go away by itself (no answer, or 429/5xx): a wait that
    meets one keeps waiting until its own deadline."""
    if isinstance(exc, UnreachableError):
        return True
    code = status_code(exc)
    return code is not None and code in RETRY_STATUS


_API_PATH = re.compile(r"^/(?:api/[^/]+|apis/[^/]+/[^/]+)/(?P<rest>.*)$")


def parse_call(method: str, path: str, params: Mapping[str, str], content_type: str = "") -> Call:
    """PURE: what a request to the API server was for, from its method, path, query
    and content type, with the verb the API server names it by (a GET with
    `watch=true` is a watch, a DELETE without a name a deletecollection, a PATCH of
    apply-patch content an apply)."""
    match = _API_PATH.match(path)
    parts = [p for p in match.group("rest").split("/") if p] if match else []
    namespace: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    resource = parts[0] if parts else path
    name = parts[1] if len(parts) > 1 else None
    if len(parts) > 2:
        resource = f"{resource}/{'/'.join(parts[2:])}"
    method = method.upper()
    if method == "GET":
        watching = params.get("watch") in ("true", "1")
        verb = "watch" if watching else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        if "apply-patch" in content_type:
            verb = "apply"
    return Call(verb=verb, resource=resource, namespace=namespace, name=name)


def call_of(request: httpx2.Request) -> Call:
    """What an HTTP request to the API server was for (`parse_call`)."""
    return parse_call(
        request.method,
        request.url.path,
        dict(request.url.params),
        request.headers.get("content-type", ""),
    )


def _why(exc: BaseException) -> str:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"TLS certificate verify failed ({item.verify_message})"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, ssl.SSLError) and not str(item).strip("() "):
            return "connection closed during the TLS handshake"
    text = " ".join(str(item) for item in chain).lower()
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, httpx2.TimeoutException) or "timed out" in text:
        return "timed out"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "no such host"
    if "certificate" in text or "ssl" in text:
        return f"TLS failed ({exc})" if str(exc).strip("() ") else "TLS handshake failed"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "the connection was closed by the server"
    return str(exc) or type(exc).__name__


def translate(
    exc: BaseException, *, call: Call, server: str, name_call: bool = False
) -> KubehoistError:
    """Any failure of a request, as the `KubehoistError` the CLI prints. `name_call`:
    say which call failed where the message would not (no answer, 5xx)."""
    if isinstance(exc, KubehoistError):
        return exc
    if isinstance(exc, ApiError):
        raw = exc.status
        fallback = exc.response.status_code if exc.response is not None else 0
        status = ServerStatus(
            code=int(raw.code or fallback),
            reason=str(raw.reason or ""),
            message=str(raw.message or ""),
        )
        return server_error(status, call=call, name_call=name_call)
    if isinstance(exc, httpx2.HTTPStatusError):
        response = exc.response
        return server_error(
            status_from_body(response.status_code, response.content),
            call=call,
            name_call=name_call,
        )
    if isinstance(exc, httpx2.TransportError | OSError):
        return unreachable(exc, server=server, call=call if name_call else None)
    raise exc


@contextmanager
def api_errors(call: Call, *, server: str) -> Iterator[None]:
    """Run one request; raise its failure as a `KubehoistError`."""
    try:
        yield
    except (httpx2.HTTPError, OSError, ApiError) as exc:
        raise translate(exc, call=call, server=server) from None
