"""The guard's Prometheus metrics and their exporter.

Every metric carries `component` and `node` (the guard's `--node`): the alerting rules
(`guard/alerts.py`) name both in what they say. The names as scraped are in
docs/guard.md#observability; the rules use them (docs/alerts.md).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, LABELS, registry=r).labels(c, n)

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, LABELS, registry=r).labels(c, n)

        self.leader = gauge("kubehoist_guard_leader", "1 while this guard holds the guards' Lease")
        self.since_renewal = gauge(
            "kubehoist_guard_seconds_since_renewal",
            "Seconds since the component's Lease was last seen renewed (guard's clock)",
        )
        self.grace = gauge(
            "kubehoist_guard_grace_seconds",
            "The guard's --grace: no renewal seen for this long (and no Ready replica) "
            "makes it fall back",
        )
        self.api_reachable = gauge(
            "kubehoist_guard_api_reachable", "1 when the last round of reads succeeded"
        )
        self.fallback_active = gauge(
            "kubehoist_guard_fallback_active",
            "1 while this node's static pod manifest is in place as the guard's fallback",
        )
        self.transitions = counter(
            "kubehoist_guard_holder_transitions", "Holder changes seen on the component's Lease"
        )
        self.fallbacks = counter("kubehoist_guard_fallbacks", "Static pod fallbacks put in place")
        self.handbacks = counter(
            "kubehoist_guard_handbacks", "Fallbacks parked again (handed back to the Deployment)"
        )
        self.reaps = counter(
            "kubehoist_guard_reaps", "Leases released because their holder was certainly dead"
        )
        self.outage = counter(
            "kubehoist_guard_outage_seconds", "Seconds with no valid leader (guard's clock)"
        )
        self.round_seconds = Histogram(
            "kubehoist_guard_round_seconds",
            "How long one round took (reads, decision, action)",
            LABELS, registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
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
