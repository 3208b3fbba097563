"""The alerting rules (kubehoist.guard.alerts): the committed rules file and
PrometheusRule are what the module says and agree with each other; every metric the
rules select is one the guard exports; each alert has its runbook and its promtool
unit tests, firing and not. promtool itself runs them in tests/e2e/test_alerts.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubehoist.guard import alerts
from kubehoist.guard.metrics import GuardMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
NOT_THE_GUARDS = {"up"}
"""Prometheus's own per-target metric; no kube-state-metrics name is used."""


def guard_exports() -> set[str]:
    """The sample names of a guard's registry as Prometheus scrapes them."""
    metrics = GuardMetrics("kube-controller-manager", "cp-1")
    metrics.certificate_expires(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_committed_files_are_generated_from_the_module() -> None:
    for name, text in alerts.files().items():
        assert (DEPLOY / name).read_text() == text, (
            f"{name} is stale: python3 -m kubehoist.guard.alerts deploy/prometheus"
        )


def test_the_prometheus_rule_carries_the_rules_file() -> None:
    plain = yaml.safe_load((DEPLOY / alerts.RULES_FILE).read_text())
    rule = yaml.safe_load((DEPLOY / alerts.PROMETHEUS_RULE_FILE).read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] and rule["metadata"]["namespace"]
    assert rule["spec"] == plain


def test_every_metric_the_rules_select_is_exported_by_the_guard() -> None:
    referenced = alerts.referenced_metrics()
    assert {"kubehoist_guard_reaps_total", "kubehoist_guard_leader", "up"} <= referenced
    missing = referenced - NOT_THE_GUARDS - guard_exports()
    assert not missing, f"rules select metrics no guard exports: {sorted(missing)}"


def test_every_rule_has_a_severity_and_says_which_component_or_node() -> None:
    for rule in alerts.rules_file()["groups"][0]["rules"]:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        said = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert set(rule["annotations"]) == {"summary", "description"}
        if "kubehoist_guard_" in rule["expr"]:
            assert "{{ $labels.component }}" in said, rule["alert"]
        if "by (" not in rule["expr"]:  # one node's guard: its node is named
            assert "$labels.node" in said, rule["alert"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="a{b}"} == 0', {"up"}),
        ("sum by (le, job) (rate(x_bucket[5m] offset 1h)) > 1e3", {"x_bucket"}),
        ("a / on(node) group_left(instance) b unless c or d and bool e", {"a", "b", "c", "d", "e"}),
        ("sum(rate(f[1m])) without (node) * time() - g:rec", {"f", "g:rec"}),
        ('label_replace(h, "dst", "$1", "src", "(.*)")', {"h"}),
        ("max_over_time(i[5m:1m]) > Inf", {"i"}),
    ],
)
def test_the_promql_identifier_scan(expr: str, names: set[str]) -> None:
    assert alerts.metric_names(expr) == names


def test_each_alert_has_a_runbook_and_promtool_tests_that_fire_and_do_not() -> None:
    doc = (ROOT / "docs" / "alerts.md").read_text()
    tests = [
        t
        for f in sorted((DEPLOY / "tests").glob("*.yaml"))
        for t in yaml.safe_load(f.read_text())["tests"]
    ]
    for name in {a.name for a in alerts.ALERTS}:
        assert f"### {name}" in doc, name
        checks = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in checks), f"{name}: no test where it fires"
        assert any(not c.get("exp_alerts") for c in checks), f"{name}: no test where it does not"
    for severity in ("warning", "critical"):
        fired = {
            (c["alertname"], e["exp_labels"]["severity"])
            for t in tests
            for c in t.get("alert_rule_test", [])
            for e in c.get("exp_alerts") or []
        }
        wanted = {(a.name, a.severity) for a in alerts.ALERTS if a.severity == severity}
        assert wanted <= fired, wanted - fired


def test_kubehoist_guard_alerts_prints_either_file() -> None:
    from click.testing import CliRunner

    from kubehoist.cli import cli

    plain = CliRunner().invoke(cli, ["guard", "alerts"])
    assert plain.exit_code == 0, plain.output
    assert plain.output == (DEPLOY / alerts.RULES_FILE).read_text()
    rule = CliRunner().invoke(cli, ["guard", "alerts", "--prometheus-rule", "--namespace", "obs"])
    assert rule.exit_code == 0, rule.output
    doc = yaml.safe_load(rule.output)
    assert doc["metadata"]["namespace"] == "obs"
    assert doc["spec"] == alerts.rules_file()
