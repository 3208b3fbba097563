"""The guard's Prometheus metrics and their exporter.

Every metric carries `component` and `node` (the guard's `--node`): the alerting rules
(`guard/alerts.py`) name both in what they say. The names as scraped are in
docs/guard.md#observability; the rules use them (docs/alerts.md).
"""

from __future__ import annotations

import datetime as dt
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from kubehoist.kube.transport import RequestRecord, verb_of

LABELS = ("component", "node")


class GuardMetrics:
    """The guard's Prometheus metrics, in a registry of their own."""

    def __init__(
        self, component: str, node: str = "", registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.component, self.node = component, node
        r, c, n = self.registry, component, node
        self.leader = Gauge(
            "kubehoist_guard_leader", "1 while this guard holds the guards' Lease",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.since_renewal = Gauge(
            "kubehoist_guard_seconds_since_renewal",
            "Seconds since the component's Lease was last seen renewed (guard's clock)",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.grace = Gauge(
            "kubehoist_guard_grace_seconds",
            "The guard's --grace: no renewal seen for this long (and no Ready replica) "
            "makes it fall back",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.api_reachable = Gauge(
            "kubehoist_guard_api_reachable", "1 when the last round of reads succeeded",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.fallback_active = Gauge(
            "kubehoist_guard_fallback_active",
            "1 while this node's static pod manifest is in place as the guard's fallback",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.transitions = Counter(
            "kubehoist_guard_holder_transitions", "Holder changes seen on the component's Lease",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.fallbacks = Counter(
            "kubehoist_guard_fallbacks", "Static pod fallbacks put in place",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.handbacks = Counter(
            "kubehoist_guard_handbacks", "Fallbacks parked again (handed back to the Deployment)",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.reaps = Counter(
            "kubehoist_guard_reaps", "Leases released because their holder was certainly dead",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self.outage = Counter(
            "kubehoist_guard_outage_seconds", "Seconds with no valid leader (guard's clock)",
            LABELS, registry=r,
        ).labels(c, n)  # fmt: skip
        self._api_requests = Counter(
            "kubehoist_guard_api_requests",
            "Requests the guard sent to the API server, by verb (get, list, watch, create, "
            "update, patch, delete; a watch counts once per connection)",
            (*LABELS, "verb"), registry=r,
        )  # fmt: skip
        self._certificate_expiry = Gauge(
            "kubehoist_guard_client_certificate_expiry_timestamp_seconds",
            "When the client certificate of the guard's kubeconfig expires (Unix time; "
            "read at start; absent without a client certificate)",
            LABELS, registry=r,
        )  # fmt: skip

    def certificate_expires(self, not_after: dt.datetime | None) -> None:
        """Export the guard's certificate's end of validity; None: nothing (a token)."""
        if not_after is not None:
            self._certificate_expiry.labels(self.component, self.node).set(not_after.timestamp())

    def api_request(self, record: RequestRecord) -> None:
        """Count one request (a `RequestLog` listener)."""
        self._api_requests.labels(self.component, self.node, verb_of(record)).inc()


def start_exporter(
    metrics: GuardMetrics, port: int, address: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` of this registry on a daemon thread (port 0: any free port,
    `server.server_port` tells which); `server.shutdown()` stops it."""
    return start_http_server(port, addr=address, registry=metrics.registry)
