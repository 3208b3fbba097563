"""The guard's runner against a faked API server and a node directory in tmp_path:
fallback, hand-back, reap, and doing nothing when the API server does not answer."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest

from kubehoist import kube
from kubehoist.components import KUBE_CONTROLLER_MANAGER
from kubehoist.guard.config import GuardConfig, marker_path
from kubehoist.guard.decide import Kind, Policy
from kubehoist.guard.loop import Guard
from kubehoist.guard.metrics import GuardMetrics
from tests.unit.kubefake import UUID_A, write_kubeconfig

NS = "kube-system"
KCM = "kube-controller-manager"
MANIFEST = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-controller-manager\n"
HOLDER = f"kcm-abc_{UUID_A}"


def lease_obj(name: str, holder: str | None, *, rv: int = 1, acquired: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "leaseDurationSeconds": 15,
        "acquireTime": acquired,
        "renewTime": acquired,
        "leaseTransitions": 1,
    }
    if holder:
        spec["holderIdentity"] = holder
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)},
        "spec": spec,
    }


def deployment_pod(name: str, *, ready: bool, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "5",
            "labels": {"app.kubernetes.io/managed-by": "kubehoist", "app.kubernetes.io/name": KCM},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs"}
            ],
        },
        "spec": {"nodeName": "w-1", "containers": [{"name": KCM, "image": "kcm"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": KCM,
                    "image": "kcm",
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "containerID": "containerd://c1",
                    "state": state,
                }
            ],
        },
    }


class FakeApi:
    """Leases (GET, POST, PUT with resourceVersion), pods (LIST by label), the
    Deployment (GET) and Events (POST); `down` makes every request fail to connect."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.down = False
        self.rv = 100

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        path = request.url.path
        if "/leases" in path:
            return self._leases(request, path)
        if path.endswith("/pods"):
            params = dict(parse_qsl(request.url.query.decode()))
            sel = dict(t.split("=", 1) for t in params.get("labelSelector", "").split(",") if t)
            items = [
                p
                for p in self.pods
                if all(p["metadata"]["labels"].get(k) == v for k, v in sel.items())
            ]
            return httpx2.Response(
                200, json={"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
            )
        if "/deployments/" in path:
            return httpx2.Response(
                200,
                json={
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": KCM, "namespace": NS, "uid": "dep-uid"},
                },
            )
        if path.endswith("/events") and request.method == "POST":
            body = json.loads(request.content)
            self.events.append(body)
            return httpx2.Response(201, json=body)
        return _status(404, "NotFound")

    def _leases(self, request: httpx2.Request, path: str) -> httpx2.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            name = body["metadata"]["name"]
            if name in self.leases:
                return _status(409, "AlreadyExists")
            return self._store(name, body, "create")
        name = path.rsplit("/", 1)[1]
        if request.method == "GET":
            if name not in self.leases:
                return _status(404, "NotFound")
            return httpx2.Response(200, json=self.leases[name])
        if request.method == "PUT":
            body = json.loads(request.content)
            have = self.leases.get(name)
            if (
                have is None
                or body["metadata"].get("resourceVersion") != have["metadata"]["resourceVersion"]
            ):
                return _status(409, "Conflict")
            return self._store(name, body, "update")
        return _status(405, "MethodNotAllowed")

    def _store(self, name: str, body: dict[str, Any], verb: str) -> httpx2.Response:
        self.rv += 1
        body = copy.deepcopy(body)
        body.setdefault("apiVersion", "coordination.k8s.io/v1")
        body.setdefault("kind", "Lease")
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[name] = body
        self.writes.append((verb, body))
        return httpx2.Response(200, json=body)


def _status(code: int, reason: str) -> httpx2.Response:
    return httpx2.Response(
        code,
        json={
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": reason,
        },
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def node(tmp_path: Path) -> Path:
    manifests = tmp_path / "etc" / "kubernetes" / "manifests"
    parked = tmp_path / "etc" / "kubernetes" / "kubehoist" / "parked"
    manifests.mkdir(parents=True)
    parked.mkdir(parents=True)
    (parked / f"{KCM}.yaml").write_bytes(MANIFEST)
    return manifests


def make_guard(tmp_path: Path, api: FakeApi, manifests: Path, clock: Clock) -> Guard:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))
    client = kube.connect(where, transport=httpx2.MockTransport(api.handler))
    config = GuardConfig(
        component=KUBE_CONTROLLER_MANAGER,
        node="cp-1",
        manifests_dir=manifests,
        policy=Policy(grace_s=20, settle_s=30, min_interval_s=5),
    )
    logs: list[dict[str, Any]] = []
    wall = lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=clock.t)  # noqa: E731
    guard = Guard(
        config,
        client=client,
        metrics=GuardMetrics(KCM, "cp-1"),
        log=logs.append,
        clock=clock,
        wall=wall,
        identity=f"cp-1_{UUID_A}",
        server=where.server,
    )
    guard.logs = logs  # type: ignore[attr-defined]
    return guard


def metric(guard: Guard, name: str) -> float:
    value = guard.metrics.registry.get_sample_value(name, {"component": KCM, "node": "cp-1"})
    return 0.0 if value is None else value


def steps(guard: Guard, clock: Clock, n: int) -> list[Kind]:
    kinds = []
    for _ in range(n):
        kinds.append(guard.step().kind)
        clock.t += 1.0
    return kinds


def test_total_loss_then_hand_back(tmp_path: Path, node: Path) -> None:
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:00Z")
    guard = make_guard(tmp_path, api, node, clock)
    kinds = steps(guard, clock, 25)
    assert kinds.count(Kind.FALLBACK) == 1
    assert kinds.index(Kind.FALLBACK) >= 20  # grace by our own clock, from first sight
    assert (node / f"{KCM}.yaml").read_bytes() == MANIFEST
    assert marker_path(guard.files, f"{KCM}.yaml").exists()
    assert api.leases[f"kubehoist-guard-{KCM}"]["spec"]["holderIdentity"] == f"cp-1_{UUID_A}"
    assert [e["reason"] for e in api.events] == ["GuardFallback"]
    assert api.events[0]["involvedObject"]["uid"] == "dep-uid"
    assert metric(guard, "kubehoist_guard_fallbacks_total") == 1
    assert metric(guard, "kubehoist_guard_leader") == 1
    assert metric(guard, "kubehoist_guard_outage_seconds_total") > 0
    assert metric(guard, "kubehoist_guard_fallback_active") == 1
    assert metric(guard, "kubehoist_guard_grace_seconds") == 20
    assert metric(guard, "kubehoist_guard_seconds_since_renewal") >= 20

    # The Deployment is fixed: a replica is Ready; after settle the fallback is parked.
    running = {"running": {"startedAt": "2026-01-01T00:20:00Z"}}
    api.pods = [deployment_pod("kcm-new", ready=True, state=running)]
    kinds = steps(guard, clock, 40)
    assert kinds.count(Kind.HAND_BACK) == 1
    assert kinds.index(Kind.HAND_BACK) >= 29
    assert not (node / f"{KCM}.yaml").exists()
    assert (guard.files.park_dir / f"{KCM}.yaml").read_bytes() == MANIFEST
    assert not marker_path(guard.files, f"{KCM}.yaml").exists()
    assert [e["reason"] for e in api.events] == ["GuardFallback", "GuardHandBack"]
    assert metric(guard, "kubehoist_guard_handbacks_total") == 1
    assert metric(guard, "kubehoist_guard_fallback_active") == 0
    actions = [r for r in guard.logs if r.get("event") == "action"]  # type: ignore[attr-defined]
    assert [a["action"] for a in actions] == ["Fallback", "HandBack"]


def test_reap_releases_the_lease_of_a_dead_holder(tmp_path: Path, node: Path) -> None:
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:10.500000Z")
    dead = {
        "terminated": {
            "exitCode": 137,
            "startedAt": "2026-01-01T00:00:05Z",
            "finishedAt": "2026-01-01T00:00:30Z",
            "containerID": "containerd://c1",
        }
    }
    api.pods = [deployment_pod("kcm-abc", ready=False, state=dead)]
    guard = make_guard(tmp_path, api, node, clock)
    kinds = steps(guard, clock, 3)
    assert Kind.REAP in kinds
    spec = api.leases[KCM]["spec"]
    assert spec.get("holderIdentity", "") == "" and spec["leaseDurationSeconds"] == 1
    assert metric(guard, "kubehoist_guard_reaps_total") == 1
    assert [e["reason"] for e in api.events] == ["GuardReap"]
    assert "terminated" in api.events[0]["message"]
    assert not (node / f"{KCM}.yaml").exists()  # nothing else was done


def test_no_reap_while_the_holder_may_be_alive(tmp_path: Path, node: Path) -> None:
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:10Z")
    running = {"running": {"startedAt": "2026-01-01T00:00:05Z"}}
    api.pods = [deployment_pod("kcm-abc", ready=True, state=running)]
    guard = make_guard(tmp_path, api, node, clock)
    # The pod vanishes (deleted by force; its last state said running): not certain.
    steps(guard, clock, 2)
    api.pods = []
    kinds = steps(guard, clock, 10)
    assert Kind.REAP not in kinds
    assert all(w[0] != "update" or w[1]["metadata"]["name"] != KCM for w in api.writes)


def test_nothing_happens_while_the_api_server_is_unreachable(tmp_path: Path, node: Path) -> None:
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:00Z")
    guard = make_guard(tmp_path, api, node, clock)
    steps(guard, clock, 3)
    api.down = True
    kinds = steps(guard, clock, 60)
    assert set(kinds) == {Kind.WAIT}
    assert not (node / f"{KCM}.yaml").exists()
    assert metric(guard, "kubehoist_guard_api_reachable") == 0
    assert metric(guard, "kubehoist_guard_leader") == 0
    errors = [r for r in guard.logs if r.get("event") == "read-error"]  # type: ignore[attr-defined]
    assert errors and "cannot reach the API server" in errors[0]["error"]


def test_another_guard_holds_the_guards_lease(tmp_path: Path, node: Path) -> None:
    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:00Z")
    other = lease_obj(f"kubehoist-guard-{KCM}", "cp-2_x", acquired="2026-01-01T00:00:00Z")
    api.leases[f"kubehoist-guard-{KCM}"] = other
    guard = make_guard(tmp_path, api, node, clock)
    kinds = []
    for i in range(30):  # the other guard renews every 2 s
        if i % 2 == 0:
            api.rv += 1
            other["spec"]["renewTime"] = f"2026-01-01T00:01:{i:02d}Z"
            other["metadata"]["resourceVersion"] = str(api.rv)
        kinds += steps(guard, clock, 1)
    assert Kind.FALLBACK not in kinds
    assert not (node / f"{KCM}.yaml").exists()
    assert api.leases[f"kubehoist-guard-{KCM}"]["spec"]["holderIdentity"] == "cp-2_x"


def test_errors_are_logged_once_and_the_guards_lease_is_released_on_stop(
    tmp_path: Path, node: Path
) -> None:
    import threading

    api, clock = FakeApi(), Clock()
    api.leases[KCM] = lease_obj(KCM, HOLDER, acquired="2026-01-01T00:00:00Z")
    guard = make_guard(tmp_path, api, node, clock)
    steps(guard, clock, 2)
    api.down = True
    steps(guard, clock, 5)
    api.down = False
    steps(guard, clock, 1)
    events = [r["event"] for r in guard.logs]  # type: ignore[attr-defined]
    assert events.count("read-error") == 1 and events.count("reads-resumed") == 1
    stop = threading.Event()
    stop.set()
    guard.run(stop)
    assert api.leases[f"kubehoist-guard-{KCM}"]["spec"].get("holderIdentity", "") == ""


def mirror_pod(uid: str) -> dict[str, Any]:
    pod = deployment_pod(
        f"{KCM}-cp-1", ready=True, state={"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    )
    meta = pod["metadata"]
    meta["uid"] = uid
    meta["labels"] = {"component": KCM, "tier": "control-plane"}
    meta["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "cp-1", "uid": "n"}]
    pod["spec"] = {"nodeName": "cp-1", "hostNetwork": True, "containers": [{"name": KCM}]}
    return pod


def test_a_mirror_pod_made_again_replaces_the_old_ones_memory(tmp_path: Path, node: Path) -> None:
    """A static pod's earlier mirror pod (gone) and its new one share the hostname; the
    old memory must not make the holder ambiguous when the new one goes after a park."""
    api, clock = FakeApi(), Clock()
    first, second = f"cp-1_{UUID_A}", "cp-1_5b7e1f3c-1a2b-4c3d-9e8f-0a1b2c3d4e5f"
    api.leases[KCM] = lease_obj(KCM, first, acquired="2026-01-01T00:00:00Z")
    guard = make_guard(tmp_path, api, node, clock)
    api.pods = [mirror_pod("m1")]
    steps(guard, clock, 2)
    api.pods = []  # a first fallback handed back: its mirror pod went, its holder reaped
    assert Kind.REAP in steps(guard, clock, 2)
    # A later fallback: a new process holds, under a mirror pod of the same name.
    api.leases[KCM] = lease_obj(KCM, second, rv=9, acquired="2026-01-01T00:01:00Z")
    api.pods = [mirror_pod("m2")]
    steps(guard, clock, 2)
    assert {p.uid for p in guard.pods.values()} == {"m2"}
    api.pods = []  # parked again: the new mirror pod goes
    assert Kind.REAP in steps(guard, clock, 2)
    assert api.leases[KCM]["spec"].get("holderIdentity", "") == ""
