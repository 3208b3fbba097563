"""`kubehoist status` and `kubehoist watch` through click, against a faked API server."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest
import yaml
from click.testing import CliRunner

import kubehoist.kube.client as kube_client
from kubehoist.cli import cli
from tests.unit.kubefake import (
    UUID_A,
    UUID_B,
    FakeCluster,
    event,
    guard_lease,
    guard_pod,
    lease,
    pod,
    write_kubeconfig,
)

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
    assert doc["apiRequests"] == 6
    as_yaml = yaml.safe_load(run(tmp_path, "status", "kcm", "-o", "yaml").stdout)
    assert {**as_yaml, "takenAt": None} == {**doc, "takenAt": None}


def test_verbose_counts_requests(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path, "status", "-v")
    assert "api requests: 7" in result.stderr
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


# --- the guards ------------------------------------------------------------------------


def guard_rows(stdout: str) -> dict[str, list[str]]:
    """The guard table's rows by component (columns split on runs of 3+ spaces)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "GUARD LEADER" in line)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r" {3,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def test_no_guard_installed_is_one_quiet_line(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path, "status", "-v")
    assert result.exit_code == 3  # the verdicts alone decide
    assert result.stdout.endswith("\nNo guard installed.\n")
    assert "GUARD" not in result.stdout and "not shown" not in result.stdout
    doc = json.loads(run(tmp_path, "status", "-o", "json").stdout)
    for comp in doc["components"]:
        assert comp["guard"] == {
            "installed": False,
            "leader": None,
            "lease": None,
            "leaseError": None,
            "ready": 0,
            "pods": [],
            "events": [],
            "eventsFound": 0,
            "eventsError": None,
        }


def test_guards_with_a_leader(fake: FakeCluster, tmp_path: Path) -> None:
    fake.leases.append(guard_lease(KCM, holder=f"cp-2_{UUID_B}"))
    fake.pods += [
        guard_pod("cp-1"),
        guard_pod("cp-2"),
        guard_pod("cp-3", ready=False, restarts=4),
        pod("unrelated", component="etcd", static=True),
    ]
    result = run(tmp_path, "status")
    assert result.exit_code == 3, result.output
    rows = guard_rows(result.stdout)
    assert rows[KCM][0] == "cp-2"
    assert rows[KCM][2:] == ["unknown yet", "2/3"]  # one read: validity unknown
    assert rows[SCHED] == ["<no guard installed>", "-", "-", "-"]
    pods = {r.split()[0]: r.split() for r in result.stdout.splitlines() if r.startswith("kubeh")}
    assert pods[f"kubehoist-guard-{KCM}-cp-2"][1:4] == ["cp-2", "True", "0"]
    assert pods[f"kubehoist-guard-{KCM}-cp-2"][-1] == "leader"
    assert pods[f"kubehoist-guard-{KCM}-cp-3"][1:4] == ["cp-3", "False", "4"]
    assert " ".join(pods[f"kubehoist-guard-{KCM}-cp-3"][-2:]) == "not ready"
    assert pods[f"kubehoist-guard-{KCM}-cp-1"][-1] == "standby"
    # the guard pods are no candidates of the component
    assert "standby" in result.stdout.split("GUARD POD")[1]
    cands = result.stdout.split("\n\n")[1]
    assert "kubehoist-guard" not in cands

    guard = json.loads(run(tmp_path, "status", "kcm", "-o", "json").stdout)["components"][0][
        "guard"
    ]
    assert guard["installed"] is True and guard["leader"] == "cp-2" and guard["ready"] == 2
    assert guard["lease"]["name"] == f"kubehoist-guard-{KCM}"
    assert guard["lease"]["holderNode"] == "cp-2"
    assert guard["lease"]["renewTime"] == "2026-01-01T00:00:12Z"
    assert guard["lease"]["validity"] == "unknown"
    assert [(p["node"], p["ready"], p["restarts"], p["role"]) for p in guard["pods"]] == [
        ("cp-1", True, 0, "standby"),
        ("cp-2", True, 0, "leader"),
        ("cp-3", False, 4, "not ready"),
    ]


def test_released_guards_lease_has_no_leader(fake: FakeCluster, tmp_path: Path) -> None:
    fake.leases.append(guard_lease(KCM, holder=None))
    fake.pods.append(guard_pod("cp-1", ready=False))
    rows = guard_rows(run(tmp_path, "status", "kcm").stdout)
    assert rows[KCM][0] == "<none>"
    assert rows[KCM][2:] == ["free (no holder)", "0/1"]


def test_a_fallback_event_is_shown(fake: FakeCluster, tmp_path: Path) -> None:
    long = "no valid leader for 21s (grace 20s) and no Ready Deployment replica: " + (
        "put the parked static pod back on this node; unparked"
    )
    fake.leases.append(guard_lease(KCM, holder=f"cp-1_{UUID_B}"))
    fake.pods.append(guard_pod("cp-1"))
    fake.events += [
        event("GuardFallback", long, node="cp-1", at="2026-01-01T00:05:00Z"),
        event("GuardHandBack", "parked", node="cp-2", at="2026-01-01T00:04:00Z"),
        event("GuardReap", "released", node="cp-2", at="2026-01-01T00:03:00Z"),
        event("GuardFallback", "the oldest", node="cp-3", at="2026-01-01T00:01:00Z"),
        event("ScalingReplicaSet", "scaled up", source="deployment-controller"),
        event("GuardFallback", "on a pod", kind="Pod"),
        event("GuardFallback", "of the scheduler", component=SCHED),
    ]
    result = run(tmp_path, "status", "kcm")
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("LAST SEEN"))
    assert re.split(r" {3,}", lines[head]) == [
        "LAST SEEN",
        "COMPONENT",
        "NODE",
        "REASON",
        "MESSAGE",
    ]
    shown = [line.split() for line in lines[head + 1 :] if line.strip()]
    assert [(r[1], r[2], r[3]) for r in shown] == [
        (KCM, "cp-1", "GuardFallback"),
        (KCM, "cp-2", "GuardHandBack"),
        (KCM, "cp-2", "GuardReap"),
    ]  # the newest 3, newest first
    first = lines[head + 1]
    assert first.endswith("...") and long not in first
    assert first[first.index("no valid leader") :] == long[:57].rstrip() + "..."
    # the whole message with -o wide and in the machine forms
    assert long in run(tmp_path, "status", "kcm", "-o", "wide").stdout
    guard = yaml.safe_load(run(tmp_path, "status", "kcm", "-o", "yaml").stdout)["components"][0][
        "guard"
    ]
    assert guard["eventsFound"] == 4
    assert guard["events"][0] == {
        "time": "2026-01-01T00:05:00Z",
        "node": "cp-1",
        "reason": "GuardFallback",
        "type": "Warning",
        "message": long,
        "count": 1,
        "name": guard["events"][0]["name"],
    }
    # one field-selected LIST, on the one Deployment when one component is asked about
    events = [r for r in fake.requests if r.url.path.endswith("/events")]
    assert {tuple(sorted(dict(parse_qsl(r.url.query.decode())).items())) for r in events} == {
        (
            ("fieldSelector", "involvedObject.kind=Deployment,"
             f"involvedObject.name={KCM},source=kubehoist-guard"),
            ("limit", "500"),
        )
    }  # fmt: skip


def test_event_messages_stay_on_one_line(fake: FakeCluster, tmp_path: Path) -> None:
    fake.leases.append(guard_lease(KCM))
    fake.events.append(event("GuardReap", "two\nlines\x1b[31m red", node="cp-2"))
    out = run(tmp_path, "status", "kcm").stdout
    row = next(line for line in out.splitlines() if "GuardReap" in line)
    assert row.endswith("two lines\\x1b[31m red")
    assert "\x1b" not in out


@pytest.mark.parametrize(
    ("refuse", "line"),
    [
        (
            {"forbid": {"events"}},
            "guard Events not shown: forbidden: cannot list events in namespace kube-system "
            '(user "jane")',
        ),
        (
            {"fail": {"events"}},
            "guard Events not shown: Error from server (InternalError): etcdserver: request "
            "timed out",
        ),
    ],
)
def test_events_forbidden_or_failing_is_one_line(
    fake: FakeCluster, tmp_path: Path, refuse: dict[str, set[str]], line: str
) -> None:
    fake.forbid = refuse.get("forbid", set())
    fake.fail = refuse.get("fail", set())
    fake.leases.append(guard_lease(KCM, holder=f"cp-2_{UUID_B}"))
    fake.pods.append(guard_pod("cp-2"))
    result = run(tmp_path, "status")
    assert result.exit_code == 3, result.output  # as without the Events
    assert result.stderr == ""
    assert [x for x in result.stdout.splitlines() if "not shown" in x] == [line]
    assert guard_rows(result.stdout)[KCM][0] == "cp-2"
    doc = json.loads(run(tmp_path, "status", "-o", "json").stdout)
    for comp in doc["components"]:
        assert comp["guard"]["events"] == []
        assert comp["guard"]["eventsError"] == line.removeprefix("guard Events not shown: ")


def test_guard_leases_unreadable_is_one_line(fake: FakeCluster, tmp_path: Path) -> None:
    fake.forbid = {"leases:list"}  # the components' Leases are still readable by name
    fake.pods.append(guard_pod("cp-1"))
    result = run(tmp_path, "status")
    assert result.exit_code == 3, result.output
    rows = guard_rows(result.stdout)
    assert rows[KCM][0] == "<unreadable>" and rows[SCHED][0] == "<unreadable>"
    assert [x for x in result.stdout.splitlines() if "not shown" in x] == [
        "guards' Leases not shown: forbidden: cannot list leases in namespace kube-system "
        '(user "jane")'
    ]
    guard = json.loads(run(tmp_path, "status", "-o", "json").stdout)["components"][1]["guard"]
    assert guard["installed"] is None and guard["leaseError"].startswith("forbidden")
