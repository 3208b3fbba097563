"""Prometheus alerting rules for the guard's metrics (`guard/metrics.py`): the one
source of `deploy/prometheus/kubehoist-rules.yaml` (a plain rules file) and
`deploy/prometheus/kubehoist-prometheusrule.yaml` (the Prometheus Operator's
PrometheusRule with the same groups as its `spec`).

`python3 -m kubehoist.guard.alerts deploy/prometheus` writes both files (a unit test
checks that the committed ones are what this module says); `kubehoist guard alerts`
prints either. What each alert means and what to do: docs/alerts.md.

Conventions: `severity` is `critical` (the component may have no leader, or soon will)
or `warning` (degraded, or the safety net is weakened); `summary` and `description`
name the component and, where one node's guard is meant, the node.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GUARD_JOB = "kubehoist-guard"
"""The scrape job of the guards' `/metrics` (KubehoistGuardDown looks at its `up`)."""
GROUP = "kubehoist-guard"
RULES_FILE = "kubehoist-rules.yaml"
PROMETHEUS_RULE_FILE = "kubehoist-prometheusrule.yaml"
PROMETHEUS_RULE_NAMESPACE = "monitoring"

NO_LEADER_FOR = "1m"
"""Past the grace: the fallback static pod leads within seconds of it (lab: 2–6 s)."""
FALLBACK_FOR = "10m"
GUARD_DOWN_FOR = "5m"
REAP_STORM_WINDOW = "10m"
REAP_STORM_MIN = 4
"""Reaps of one component within the window; `increase()` extrapolates, so three
reaps may read 3.1: the threshold is a whole number compared with `>=`."""
CERT_WARNING_DAYS = 14
CERT_CRITICAL_DAYS = 3

_ON_NODE = "the guard of {{ $labels.component }} on node {{ $labels.node }}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str | None = None

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_:
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="KubehoistNoLeader",
        expr=(
            "min by (component) (\n"
            "  kubehoist_guard_seconds_since_renewal - kubehoist_guard_grace_seconds\n"
            ") > 0\n"
        ),
        for_=NO_LEADER_FOR,
        severity="critical",
        summary="No {{ $labels.component }} leads, longer than the guard's grace",
        description=(
            "Every guard of {{ $labels.component }} has seen no renewal of its Lease for "
            "{{ $value | humanizeDuration }} past its --grace: nothing leads, and no "
            "fallback has brought a leader back."
        ),
    ),
    Alert(
        name="KubehoistGuardFallbackActive",
        expr="kubehoist_guard_fallback_active == 1",
        for_=FALLBACK_FOR,
        severity="warning",
        summary=(
            "{{ $labels.component }} runs as the guard's fallback static pod on node "
            "{{ $labels.node }}"
        ),
        description=(
            f"For more than {FALLBACK_FOR} {_ON_NODE} has kept the parked static pod in "
            "place: the Deployment has no Ready replica that could take over."
        ),
    ),
    Alert(
        name="KubehoistGuardDown",
        expr=f'up{{job="{GUARD_JOB}"}} == 0',
        for_=GUARD_DOWN_FOR,
        severity="warning",
        summary="A kubehoist guard cannot be scraped",
        description=(
            "The guard's /metrics at {{ $labels.instance }}"
            "{{ with $labels.node }} (node {{ . }}){{ end }} has not answered for "
            f"{GUARD_DOWN_FOR}: that node cannot fall back or hand back."
        ),
    ),
    Alert(
        name="KubehoistGuardNotLeading",
        expr="max by (component) (kubehoist_guard_leader) == 0",
        for_=GUARD_DOWN_FOR,
        severity="warning",
        summary="No guard of {{ $labels.component }} holds the guards' Lease",
        description=(
            "Every guard of {{ $labels.component }} that is scraped says it does not hold "
            "kube-system/kubehoist-guard-{{ $labels.component }}: no guard can fall back "
            "or reap until one does."
        ),
    ),
    Alert(
        name="KubehoistGuardAPIUnreachable",
        expr="kubehoist_guard_api_reachable == 0",
        for_=GUARD_DOWN_FOR,
        severity="warning",
        summary="The guard of {{ $labels.component }} on {{ $labels.node }} cannot read",
        description=(
            f"The reads of {_ON_NODE} have failed for {GUARD_DOWN_FOR} (API server, "
            "network, or its certificate): it waits and does nothing meanwhile."
        ),
    ),
    Alert(
        name="KubehoistGuardReapStorm",
        expr=(
            f"sum by (component) (increase(kubehoist_guard_reaps_total[{REAP_STORM_WINDOW}]))"
            f" >= {REAP_STORM_MIN}"
        ),
        severity="warning",
        summary="The guards of {{ $labels.component }} keep reaping its Lease",
        description=(
            "The guards released the Lease of {{ $labels.component }} "
            f"{REAP_STORM_MIN} times or more within {REAP_STORM_WINDOW}, each time "
            "because its holder had died: its leaders keep dying (a crash loop, OOM "
            "kills, a node going away)."
        ),
    ),
    *(
        Alert(
            name="KubehoistGuardCertificateExpiration",
            expr=(
                "kubehoist_guard_client_certificate_expiry_timestamp_seconds - time()"
                f" < {days} * 86400"
            ),
            for_="15m",
            severity=severity,
            summary=(
                "The certificate of the guard of {{ $labels.component }} on "
                f"{{{{ $labels.node }}}} expires within {days} days"
            ),
            description=(
                f"The client certificate in the kubeconfig of {_ON_NODE} expires in "
                "{{ $value | humanizeDuration }}; after that it cannot read. Renew it "
                "with `kubehoist guard install`."
            ),
        )
        for days, severity in ((CERT_WARNING_DAYS, "warning"), (CERT_CRITICAL_DAYS, "critical"))
    ),
)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "inf", "nan"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: a scan of its identifiers, not a
    parser. Strings, label matchers `{...}`, ranges `[...]`, label lists `by (...)`,
    function and aggregation calls, keywords and numbers are left out. Enough for
    the rules here (they select no metric by `__name__`)."""
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _LABEL_LIST.sub(" ", s)
    return {
        m.group(1)
        for m in _IDENT.finditer(s)
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS
    }


def referenced_metrics() -> set[str]:
    """Every metric name the alerts' expressions select."""
    return set().union(*(metric_names(a.expr) for a in ALERTS))


def groups() -> list[dict[str, Any]]:
    return [{"name": GROUP, "rules": [a.rule() for a in ALERTS]}]


def rules_file() -> dict[str, Any]:
    """A plain Prometheus rules file (`rule_files:`)."""
    return {"groups": groups()}


def prometheus_rule(namespace: str = PROMETHEUS_RULE_NAMESPACE) -> dict[str, Any]:
    """The same groups as a PrometheusRule (monitoring.coreos.com/v1)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "kubehoist-guard",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "kubehoist",
                "app.kubernetes.io/component": "guard",
            },
        },
        "spec": rules_file(),
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = (
    "# Generated by `python3 -m kubehoist.guard.alerts deploy/prometheus` from\n"
    "# src/kubehoist/guard/alerts.py: change that, then run it. Runbook: docs/alerts.md.\n"
)


def dump(doc: dict[str, Any]) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def files() -> dict[str, str]:
    return {RULES_FILE: dump(rules_file()), PROMETHEUS_RULE_FILE: dump(prometheus_rule())}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m kubehoist.guard.alerts DIR", file=sys.stderr)
        return 2
    for name, text in files().items():
        (Path(argv[0]) / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
