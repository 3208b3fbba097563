"""The alerting rules checked by the real promtool (built from the Go module proxy by
`kubehoist lab build`, like the lab's binaries): `promtool check rules` on the plain
rules file and on the PrometheusRule's `spec`, and `promtool test rules` on the unit
tests in deploy/prometheus/tests/ (each alert firing, and not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kubehoist.guard import alerts
from kubehoist.lab.binaries import ensure_tools

pytestmark = pytest.mark.lab

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    path = ensure_tools(progress=False).path("promtool")
    proc = subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} exited {proc.returncode}:\n{out}"
    return out


def test_check_the_rules_file() -> None:
    out = promtool("check", "rules", str(DEPLOY / alerts.RULES_FILE))
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in out, out


def test_check_the_prometheus_rules_spec(tmp_path: Path) -> None:
    rule = yaml.safe_load((DEPLOY / alerts.PROMETHEUS_RULE_FILE).read_text())
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    out = promtool("check", "rules", str(spec))
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in out, out


def test_the_rules_unit_tests() -> None:
    files = sorted(str(f) for f in (DEPLOY / "tests").glob("*.yaml"))
    assert files
    out = promtool("test", "rules", *files)
    assert "SUCCESS" in out and "FAILED" not in out, out
