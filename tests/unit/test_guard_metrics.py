"""A running guard's `/metrics`, scraped over HTTP from the exporter the guard starts
(`guard.metrics.start_exporter`, as `kubehoist guard run` does) and read with
Prometheus's text-format parser: every metric the alerting rules select is there,
with the component and node labels, and says what the guard did."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubehoist.guard import alerts
from kubehoist.guard.metrics import start_exporter
from tests.unit.test_guard_loop import (
    HOLDER,
    KCM,
    MANIFEST,
    Clock,
    FakeApi,
    lease_obj,
    make_guard,
    steps,
)

EXPIRY = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    etc = tmp_path / "etc" / "kubernetes"
    (etc / "manifests").mkdir(parents=True)
    (etc / "kubehoist" / "parked").mkdir(parents=True)
    (etc / "kubehoist" / "parked" / f"{KCM}.yaml").write_bytes(MANIFEST)
    return etc / "manifests"


@pytest.fixture
def scrape(tmp_path: Path, manifests: Path) -> Iterator[dict[str, dict[str, float]]]:
    """A guard that fell back (no leader past its grace), served on a free port; the
    scraped samples by name, each as {node label: value}."""
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:00Z")
    guard = make_guard(tmp_path, api, manifests, clock)
    guard.metrics.certificate_expires(EXPIRY)
    server, thread = start_exporter(guard.metrics, 0)
    try:
        steps(guard, clock, 25)  # grace 20 s: one fallback
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.labels.get("component") == KCM, s
            samples.setdefault(s.name, {})[s.labels["node"]] = s.value
    yield samples


def test_every_metric_the_rules_select_is_scraped(scrape: dict[str, dict[str, float]]) -> None:
    missing = alerts.referenced_metrics() - {"up"} - set(scrape)
    assert not missing, sorted(missing)


def test_the_scraped_values_say_what_the_guard_did(scrape: dict[str, dict[str, float]]) -> None:
    assert scrape["kubehoist_guard_leader"] == {"cp-1": 1}
    assert scrape["kubehoist_guard_api_reachable"] == {"cp-1": 1}
    assert scrape["kubehoist_guard_fallbacks_total"] == {"cp-1": 1}
    assert scrape["kubehoist_guard_fallback_active"] == {"cp-1": 1}
    assert scrape["kubehoist_guard_reaps_total"] == {"cp-1": 0}
    assert scrape["kubehoist_guard_grace_seconds"] == {"cp-1": 20}
    assert scrape["kubehoist_guard_seconds_since_renewal"]["cp-1"] > 20
    assert scrape["kubehoist_guard_client_certificate_expiry_timestamp_seconds"] == {
        "cp-1": EXPIRY.timestamp()
    }


def test_no_certificate_no_expiry_sample() -> None:
    """A kubeconfig without a client certificate exports no expiry (a 0 would read as
    expired since 1970 and fire the certificate alerts)."""
    from prometheus_client import generate_latest

    from kubehoist.guard.metrics import GuardMetrics

    metrics = GuardMetrics(KCM, "cp-1")
    metrics.certificate_expires(None)
    text = generate_latest(metrics.registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "kubehoist_guard_client_certificate_expiry_timestamp_seconds" not in names
    assert "kubehoist_guard_leader" in names
