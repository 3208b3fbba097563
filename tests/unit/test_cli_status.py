"""`kubehoist status` and `kubehoist watch` through click, against a faked API server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from click.testing import CliRunner

import kubehoist.kube.client as kube_client
from kubehoist.cli import cli
from tests.unit.kubefake import UUID_A, UUID_B, FakeCluster, lease, pod, write_kubeconfig

KCM = "kube-controller-manager"
SCHED = "kube-scheduler"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster(
        leases=[lease(KCM), lease(SCHED, holder=f"cp-1_{UUID_A}")],
        pods=[
            pod("kube-controller-manager-cp-1", static=True),
            pod("kube-scheduler-cp-1", component=SCHED, static=True),
        ],
    )
    monkeypatch.setattr(kube_client, "async_tls_transport", lambda config: cluster.transport())
    return cluster


def run(tmp_path: Path, *args: str) -> Any:
    config = write_kubeconfig(tmp_path / "config")
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(config)])


def test_static_pods_alone_are_no_standby_and_exit_3(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path, "status")
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "COMPONENT", "VERDICT", "HOLDER", "ACQUIRED", "RENEWED", "DURATION", "TRANSITIONS",
        "STANDBYS",
    ]  # fmt: skip
    assert lines[1].startswith("kube-controller-manager   NoStandby   static pod on cp-1")
    assert "unknown yet" in lines[1]
    assert lines[2].startswith("kube-scheduler            NoStandby   static pod on cp-1")
    assert lines[4].split() == [
        "CANDIDATE", "COMPONENT", "KIND", "NODE", "READY", "RESTARTS", "AGE", "ROLE",
    ]  # fmt: skip
    assert lines[5].split()[:6] == [
        "kube-controller-manager-cp-1", KCM, "static", "cp-1", "True", "0",
    ]  # fmt: skip
    assert lines[5].split()[-1] == "leader"


def test_a_ready_deployment_standby_is_healthy_and_exit_0(
    fake: FakeCluster, tmp_path: Path
) -> None:
    fake.pods.append(pod("kube-controller-manager-6b7c9-x2x4p", node="w-1"))
    result = run(tmp_path, "status", KCM, "-o", "wide")
    assert result.exit_code == 0, result.output
    assert "Healthy" in result.stdout
    assert "a Ready leader and 1 Ready standby" in result.stdout
    row = next(r for r in result.stdout.splitlines() if r.startswith("kube-controller-manager-6b"))
    assert row.split()[2] == "deployment" and "standby" in row
    assert SCHED not in result.stdout


def test_json_and_yaml(fake: FakeCluster, tmp_path: Path) -> None:
    fake.pods.append(pod("kcm-abc", node="w-1"))
    fake.leases[0] = lease(KCM, holder=f"kcm-abc_{UUID_B}", transitions=1)
    result = run(tmp_path, "status", "kcm", "-o", "json")
    doc = json.loads(result.stdout)
    comp = doc["components"][0]
    assert comp["verdict"] == "Healthy"
    assert comp["leader"]["pod"] == "kcm-abc"
    assert comp["lease"]["holderHostname"] == "kcm-abc"
    assert comp["lease"]["holderUUID"] == UUID_B
    assert comp["lease"]["validity"] == "unknown"
    assert comp["lease"]["leaseTransitions"] == 1
    assert [c["role"] for c in comp["candidates"]] == ["standby", "leader"]
    assert doc["apiRequests"] == 3
    as_yaml = yaml.safe_load(run(tmp_path, "status", "kcm", "-o", "yaml").stdout)
    assert {**as_yaml, "takenAt": None} == {**doc, "takenAt": None}


def test_verbose_counts_requests(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path, "status", "-v")
    assert "api requests: 4" in result.stderr
    assert "GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler 200" in (
        result.stderr
    )


def test_missing_lease_and_unknown_holder(fake: FakeCluster, tmp_path: Path) -> None:
    fake.leases = [lease(SCHED, holder=f"somewhere_{UUID_A}")]
    result = run(tmp_path, "status", "-o", "json")
    verdicts = {c["component"]: c["verdict"] for c in json.loads(result.stdout)["components"]}
    assert verdicts == {KCM: "NoLease", SCHED: "HolderUnknown"}
    assert result.exit_code == 3


def test_rbac_error_is_one_line(fake: FakeCluster, tmp_path: Path) -> None:
    fake.forbid = {"pods"}
    result = run(tmp_path, "status")
    assert result.exit_code == 1
    assert result.stderr == (
        'error: forbidden: cannot list pods in namespace kube-system (user "jane")\n'
    )


def test_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr(
        kube_client, "async_tls_transport", lambda config: httpx2.MockTransport(refuse)
    )
    result = run(tmp_path, "status")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot reach the API server at https://10.0.0.1:6443: connection refused\n"
    )


def test_unknown_component_is_a_usage_error(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path, "status", "etcd")
    assert result.exit_code == 2
    assert "unknown component 'etcd'" in result.stderr


def test_watch_jsonl_reports_a_leader_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeCluster(
        leases=[lease(KCM, rv="100")],
        pods=[pod("kube-controller-manager-cp-1", static=True), pod("kcm-abc", node="w-1")],
    )
    changed = lease(KCM, holder=f"kcm-abc_{UUID_B}", rv="101", transitions=1)
    lease_watches = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal lease_watches
        if "watch=true" not in str(request.url):
            return fake.handler(request)
        await asyncio.sleep(0.2)
        if "/leases" in request.url.path:
            lease_watches += 1
            if lease_watches == 1:
                line = json.dumps({"type": "MODIFIED", "object": changed}) + "\n"
                return httpx2.Response(200, content=line.encode())
        return httpx2.Response(200, content=b"")

    monkeypatch.setattr(
        kube_client, "async_tls_transport", lambda config: httpx2.MockTransport(handler)
    )
    result = run(tmp_path, "watch", "kcm", "--output", "jsonl", "--for", "1.5")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events][:2] == ["observing", "leader_changed"]
    first, change = events[0], events[1]
    assert first["pod"] == "kube-controller-manager-cp-1" and first["verdict"] == "Healthy"
    assert change["previous_pod"] == "kube-controller-manager-cp-1"
    assert change["pod"] == "kcm-abc"
    assert change["kind"] == "deployment"
    assert change["lease_gap_s"] == 0.0  # handed over while the old lease was valid
    assert change["transitions"] == 1
