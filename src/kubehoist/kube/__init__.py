"""The only package that talks to the API server.

config     kubeconfig precedence like kubectl (--kubeconfig, KUBECONFIG, --context)
transport  TLS and the request tally (`-v` prints every request)
errors     the one error strategy: failures -> KubehoistError in kubectl's words
api        status's and watch's reads on lightkube's AsyncClient: GET, paged LIST,
           WATCH, objects as dicts, failures as KubehoistError
retry      when a request is sent again (API server outages), back-off, deadlines
client     Target, open_api (the async reader), connect/connect_async (lightkube),
           session (lightkube, retried and mapped: the verbs that change a cluster)
objects    PURE decoding of Pods and Leases into `election` types
reads      status's bounded reads
controlplane  render --from-cluster's reads: mirror pods, kubeadm-config (lightkube)
watch      list-then-watch: bounded watches, relist on 410 and after failures, back-off
"""

from kubehoist.kube.api import Api, ListResult
from kubehoist.kube.client import (
    Session,
    Target,
    connect,
    connect_async,
    open_api,
    session,
    target,
)
from kubehoist.kube.errors import (
    ApiServerError,
    Call,
    ForbiddenError,
    GoneError,
    NotFoundError,
    UnreachableError,
    api_errors,
    translate,
)
from kubehoist.kube.transport import RequestLog

__all__ = [
    "Api",
    "ApiServerError",
    "Call",
    "ForbiddenError",
    "GoneError",
    "ListResult",
    "NotFoundError",
    "RequestLog",
    "Session",
    "Target",
    "UnreachableError",
    "api_errors",
    "connect",
    "connect_async",
    "open_api",
    "session",
    "target",
    "translate",
]
