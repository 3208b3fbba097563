"""`kubehoist status` and the guards, as a library: the bounded reads, the guards' Lease
judged by our own clock (--observe), and what a real guard writes read back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2

from kubehoist import kube
from kubehoist.components import KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER
from kubehoist.constants import guard_lease_name
from kubehoist.guard import manifest as guard_manifest
from kubehoist.guard.decide import Decision, Kind
from kubehoist.kube import objects
from kubehoist.status import StatusReport, collect
from kubehoist.statusdoc import to_dict
from kubehoist.views import status_tables
from tests.unit.kubefake import (
    UUID_A,
    UUID_B,
    FakeCluster,
    event,
    guard_lease,
    guard_pod,
    held_open,
    lease,
    pod,
    write_kubeconfig,
)
from tests.unit.test_guard_loop import Clock, FakeApi, make_guard

KCM = "kube-controller-manager"
SCHED = "kube-scheduler"


def status(
    fake: FakeCluster | httpx2.MockTransport,
    tmp_path: Path,
    *,
    components: tuple[Any, ...] = (KUBE_CONTROLLER_MANAGER,),
    observe_s: float = 0.0,
    clock: Any = None,
) -> StatusReport:
    transport = fake.transport() if isinstance(fake, FakeCluster) else fake
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))

    async def run() -> StatusReport:
        async with kube.open_api(where, transport=transport) as api:
            extra = {"clock": clock} if clock is not None else {}
            return await collect(
                api,
                components=list(components),
                namespace="kube-system",
                observe_s=observe_s,
                **extra,
            )

    return asyncio.run(run())


def cluster() -> FakeCluster:
    return FakeCluster(
        leases=[lease(KCM), guard_lease(KCM, holder=f"cp-2_{UUID_B}")],
        pods=[
            pod("kube-controller-manager-cp-1", static=True),
            guard_pod("cp-1"),
            guard_pod("cp-2"),
        ],
    )


def test_seven_requests_for_both_components_whatever_the_guards(tmp_path: Path) -> None:
    fake = cluster()
    fake.pods += [pod(f"filler-{i}", component="etcd") for i in range(50)]
    fake.events += [event(at=f"2026-01-01T00:{i:02d}:00Z") for i in range(20)]
    report = status(fake, tmp_path, components=(KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER))
    assert report.requests == 7  # + the LIST of kubehoist's Deployments (credentials)
    seen = sorted(
        (r.url.path, tuple(sorted(dict(parse_qsl(r.url.query.decode())).items())))
        for r in fake.requests
    )
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    assert seen == [
        ("/api/v1/namespaces/kube-system/events", (
            ("fieldSelector", "involvedObject.kind=Deployment,source=kubehoist-guard"),
            ("limit", "500"),
        )),
        ("/api/v1/namespaces/kube-system/pods", (
            ("labelSelector", "app.kubernetes.io/managed-by=kubehoist,app.kubernetes.io/name in "
             "(kube-controller-manager,kube-scheduler,kubehoist-guard-kube-controller-manager,"
             "kubehoist-guard-kube-scheduler)"),
            ("limit", "500"),
        )),
        ("/api/v1/namespaces/kube-system/pods", (
            ("labelSelector", "component in (kube-controller-manager,kube-scheduler)"),
            ("limit", "500"),
        )),
        ("/apis/apps/v1/namespaces/kube-system/deployments", (
            ("labelSelector", "app.kubernetes.io/managed-by=kubehoist,"
             "app.kubernetes.io/name in (kube-controller-manager,kube-scheduler)"),
            ("limit", "500"),
        )),
        (leases, (
            ("labelSelector", "app.kubernetes.io/managed-by=kubehoist,"
             "app.kubernetes.io/name in (kube-controller-manager,kube-scheduler)"),
            ("limit", "500"),
        )),
        (f"{leases}/kube-controller-manager", ()),
        (f"{leases}/kube-scheduler", ()),
    ]  # fmt: skip
    kcm, sched = report.components
    assert [p.node for p in kcm.guard.pods] == ["cp-1", "cp-2"]
    assert [c.name for c in kcm.candidates] == ["kube-controller-manager-cp-1"]
    assert len(kcm.guard.events) == 3 and kcm.guard.events_found == 20
    assert [e.time.minute for e in kcm.guard.events if e.time] == [19, 18, 17]
    assert sched.guard.installed is False and sched.guard.pods == ()


def test_expired_guards_lease_by_our_clock(tmp_path: Path) -> None:
    fake = cluster()  # the guards' Lease never changes while we watch
    ticks = iter(range(1000))
    report = status(fake, tmp_path, observe_s=0.3, clock=lambda: float(next(ticks)))
    g = report.components[0].guard
    assert g.observation is not None and g.observation.changed_at is None and g.observed_s > 0
    now = g.observation.first_seen + 30.0  # twice the guards' lease duration, by our clock
    assert g.leader(now=now) is None
    table = status_tables(report, now=now, wide=False)
    row = next(line for line in table.splitlines() if line.startswith(KCM) and "was" in line)
    assert "<none> (was cp-2)" in row and "expired (30.0s unchanged)" in row
    assert "2/2" in row
    guard = to_dict(report, now=now)["components"][0]["guard"]
    assert guard["leader"] is None
    assert guard["lease"]["validity"] == "expired"
    assert guard["lease"]["holderNode"] == "cp-2"
    assert [p["role"] for p in guard["pods"]] == ["standby", "standby"]
    # --observe watches the guards' Leases with one label-selected stream
    watches = [r for r in fake.requests if "watch=true" in str(r.url)]
    assert any(
        "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dkubehoist" in str(r.url) for r in watches
    )


def test_guards_lease_seen_to_change_is_valid(tmp_path: Path) -> None:
    fake = cluster()
    renewed = guard_lease(KCM, holder=f"cp-2_{UUID_B}", renew="2026-01-01T00:00:14.000000Z")
    renewed["metadata"]["resourceVersion"] = "101"
    ticks = iter(range(1000))

    async def handler(request: httpx2.Request) -> httpx2.Response:
        query = str(request.url)
        if "watch=true" in query and "kubehoist" in query and "/leases" in query:
            return held_open({"type": "MODIFIED", "object": renewed})
        return fake.handler(request)

    report = status(
        httpx2.MockTransport(handler), tmp_path, observe_s=0.5, clock=lambda: float(next(ticks))
    )
    g = report.components[0].guard
    assert g.observation is not None and g.observation.changed_at is not None
    now = g.observation.changed_at + 2.0
    assert g.leader(now=now) == "cp-2"
    row = next(
        line
        for line in status_tables(report, now=now, wide=False).splitlines()
        if line.startswith(KCM) and "cp-2" in line
    )
    assert "valid, changed 2.0s ago" in row


def test_what_a_guard_writes_is_what_status_reads(tmp_path: Path) -> None:
    """The guard's own Lease, Event and static pod, as guard/ writes them, read back."""
    assert (
        objects.guard_name(KCM)
        == guard_lease_name(KCM)
        == guard_manifest.pod_name(KUBE_CONTROLLER_MANAGER)
    )
    api, clock = FakeApi(), Clock()
    node = tmp_path / "manifests"
    node.mkdir()
    guard = make_guard(tmp_path, api, node, clock)
    guard.coordinate(clock())
    reason = "no valid leader for 21s (grace 20s) and no Ready Deployment replica"
    guard.emit_event(Decision(kind=Kind.FALLBACK, reason=reason), "unparked")
    static = guard_manifest.static_pod(KUBE_CONTROLLER_MANAGER)
    mirror = json.loads(json.dumps(static))
    mirror["metadata"].update(
        name=f"{static['metadata']['name']}-cp-1",
        uid="uid-guard-cp-1",
        annotations={"kubernetes.io/config.mirror": "x"},
        creationTimestamp="2026-01-01T00:00:00Z",
    )
    mirror["spec"]["nodeName"] = "cp-1"
    mirror["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "guard", "restartCount": 2, "image": "guard", "imageID": "", "ready": True}
        ],
    }
    fake = FakeCluster(
        leases=[lease(KCM, holder=f"cp-1_{UUID_A}"), *api.leases.values()],
        pods=[pod("kube-controller-manager-cp-1", static=True), mirror],
        events=api.events,
    )
    report = status(fake, tmp_path)
    g = report.components[0].guard
    assert g.leader(now=0.0) == "cp-1"
    assert [(p.node, p.ready, p.restarts) for p in g.pods] == [("cp-1", True, 2)]
    assert g.role(g.pods[0], now=0.0).value == "leader"
    assert [c.name for c in report.components[0].candidates] == ["kube-controller-manager-cp-1"]
    (ev,) = g.events
    assert (ev.reason, ev.node, ev.type) == ("GuardFallback", "cp-1", "Warning")
    assert ev.message == f"{reason}; unparked"
    assert ev.time is not None and ev.time.tzinfo is not None


def test_guard_events_are_filtered_and_sorted_whatever_the_server_selected() -> None:
    objs = [
        event("GuardReap", at="2026-01-01T00:03:00Z"),
        event("GuardFallback", at="2026-01-01T00:01:00"),  # no zone: read as UTC
        event("ScalingReplicaSet", source="deployment-controller"),
        event("Scheduled", source="kubehoist-guard"),
        event("GuardFallback", kind="Pod"),
        event("GuardHandBack", component="someone-else"),
        {"kind": "Event", "metadata": {"name": "bare"}},
    ]
    found = objects.guard_events(objs, components=[KCM, SCHED])
    assert found[SCHED] == []
    assert [(e.reason, e.time.isoformat() if e.time else None) for e in found[KCM]] == [
        ("GuardReap", "2026-01-01T00:03:00+00:00"),
        ("GuardFallback", "2026-01-01T00:01:00+00:00"),
    ]
