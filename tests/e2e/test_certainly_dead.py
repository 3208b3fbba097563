""" "Certainly dead", rule by rule, on the real kubelet.

kubehoist releases a controller manager's Lease before it expires only when its holder
is certainly dead (guard/decide.py `death_evidence`, `parked_static_evidence`;
pivot/handover.py `static_pod_stopped`). Each rule reads what the kubelet posts on the
holder's pod. Here each fault is made on the lab's real kubelet, every version of the
pod the API server streamed is recorded (`kubectl get --watch`), and each rule is fed
those versions in order: it must say "dead" on a version posted after the fault, and
never on one posted before it. A frozen leader (SIGSTOP past the lease) is alive by
every rule: its Lease is left to expire, as client-go's own election does.

Order (one lab): the static pod is parked and restored by hand; then pivot; the
Deployment leader is SIGKILLed, then deleted, then frozen; rollback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.election import LeaseRecord, node_of_host
from kubehoist.guard.decide import Baseline, death_evidence, parked_static_evidence
from kubehoist.guard.observe import pod_view
from kubehoist.kube.objects import lease_record
from kubehoist.lab import podproc
from kubehoist.pivot.handover import static_pod_stopped
from tests.e2e.conftest import LabHandle, kubehoist
from tests.e2e.kwatch import KubectlWatch

pytestmark = pytest.mark.lab

KCM = "kube-controller-manager"
MANIFEST = f"{KCM}.yaml"


@dataclass(frozen=True)
class Seen:
    t: float  # this process's monotonic clock when the event arrived
    type: str  # ADDED, MODIFIED, DELETED
    pod: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])


class PodWatch:
    """Every event of the controller manager's pods (static and Deployment)."""

    def __init__(self, lab: LabHandle) -> None:
        self.events: list[Seen] = []
        self._lock = threading.Lock()
        self._watch = KubectlWatch(
            str(lab.kubeconfig), "-l", f"component={KCM}", on_event=self._add
        )

    def _add(self, t: float, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(Seen(t, kind, obj))

    def of(self, name: str) -> list[Seen]:
        with self._lock:
            return [e for e in self.events if e.name == name]

    def close(self) -> None:
        self._watch.close()


class ProcessWatch:
    """When a container's process stopped (gone, or a zombie): polled every 10 ms."""

    POLL_S = 0.01

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.gone: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set() and self._alive():
            time.sleep(self.POLL_S)
        if self.gone is None and not self._stop.is_set():
            self.gone = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lease(lab: LabHandle) -> LeaseRecord | None:
    try:
        obj = lab.client.get(Lease, KCM, namespace="kube-system")
    except ApiError:
        return None
    return lease_record(obj.to_dict())


def holder(lab: LabHandle) -> str:
    rec = lease(lab)
    return (rec.holder if rec else None) or ""


def fresh_holder(lab: LabHandle) -> str:
    """The holder, once its record is renewed within the last 5 s."""
    rec = lease(lab)
    if rec is None or not rec.holder or rec.renew_time is None:
        return ""
    return rec.holder if time.time() - rec.renew_time.timestamp() < 5 else ""


def mirror_ready(lab: LabHandle) -> bool:
    """The static pod's mirror pod is there and Ready (pivot's preflight reads it)."""
    name = f"{KCM}-{lab.spec.api_node.name}"
    try:
        pod = lab.client.get(Pod, name, namespace="kube-system")
    except ApiError:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def static_leads(lab: LabHandle) -> bool:
    host = holder(lab).rpartition("_")[0]
    return node_of_host(host, [n.name for n in lab.spec.control_planes]) is not None


def view(e: Seen) -> Any:
    return pod_view(e.pod, component=KCM, gone=e.type == "DELETED")


def evidence_over(
    events: list[Seen], rule: Callable[[Seen], str | None], fault_t: float
) -> tuple[list[str], Seen | None, str | None]:
    """Feed each event to `rule`: what it said before the fault, and its first "dead"
    after the fault (the event and the evidence)."""
    before = [f"{e.type}: {got}" for e in events if e.t < fault_t and (got := rule(e))]
    for e in events:
        if e.t >= fault_t and (got := rule(e)):
            return before, e, got
    return before, None, None


def assert_dead_only_after_death(
    events: list[Seen], rule: Callable[[Seen], str | None], fault_t: float, proc: ProcessWatch
) -> tuple[Seen, str]:
    """`rule` says nothing before the fault; it says "dead" on some version after it, and
    only on versions that arrived after the process had stopped (the tolerance is the
    process poll's 10 ms). Returns the first "dead" version and its evidence."""
    before, first, why = evidence_over(events, rule, fault_t)
    assert before == [], before
    assert first is not None and why is not None, "no version was called dead"
    assert proc.gone is not None, "the process never stopped"
    early = [e for e in events if e.t < proc.gone - ProcessWatch.POLL_S and rule(e)]
    assert early == [], [f"{e.type} {e.t - proc.gone:+.3f}s" for e in early]
    return first, why


def container_of(e: Seen) -> dict[str, Any]:
    statuses = (e.pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == KCM), {})


def describe(events: list[Seen], since: float) -> str:
    rows = []
    for e in events:
        c = container_of(e)
        state = next(iter(c.get("state") or {}), "none")
        deleting = " deleting" if e.pod["metadata"].get("deletionTimestamp") else ""
        rows.append(
            f"{e.t - since:+.2f}s {e.type}{deleting}: {state} restarts={c.get('restartCount')} "
            f"last={'terminated' if (c.get('lastState') or {}).get('terminated') else '-'}"
        )
    return "; ".join(rows)


# --- the static pod, parked by hand ---------------------------------------------------------


def test_a_parked_static_pod_is_dead_by_its_terminated_container_or_its_mirror_pod(
    lab: LabHandle,
) -> None:
    """pivot's rule (manifest gone, then every container terminated or the mirror pod
    deleted) and the guard's hand-back rule (own parked static pod, mirror pod deleted).
    The kubelet may post the container terminated before it deletes the mirror pod, or
    delete the mirror pod with the last status still saying running: either way, no
    rule may say "dead" before the process has stopped."""
    wait_for(
        "the static controller manager to lead", lambda: static_leads(lab) and fresh_holder(lab)
    )
    node = lab.spec.api_node
    manifest = node.manifests_dir(lab.spec.root) / MANIFEST
    original = manifest.read_bytes()
    mirror = f"{KCM}-{node.name}"
    rec = lease(lab)
    assert rec is not None and rec.holder
    proc = ProcessWatch(
        podproc.container_pid(lab.spec, lab.client.get(Pod, mirror, namespace="kube-system"), KCM)
    )
    watch = PodWatch(lab)
    park = Path(tempfile.mkdtemp(prefix="kh-dead-"))
    try:
        wait_for("the mirror pod in the watch", lambda: watch.of(mirror), 30)
        t_park = time.monotonic()
        shutil.move(str(manifest), park / MANIFEST)
        wait_for(
            "the mirror pod deleted", lambda: any(e.type == "DELETED" for e in watch.of(mirror)), 90
        )
    finally:
        if not manifest.exists():
            shutil.move(str(park / MANIFEST), manifest)
        shutil.rmtree(park, ignore_errors=True)
        watch.close()
        proc.close()
    assert manifest.read_bytes() == original
    events = watch.of(mirror)
    print(f"\n[dead e2e] static pod parked: {describe(events, t_park)}")

    def pivot_rule(e: Seen) -> str | None:
        pod = None if e.type == "DELETED" else Pod.from_dict(e.pod)
        assert pod is None or isinstance(pod, Pod)
        return "stopped" if static_pod_stopped(pod) else None

    first, _ = assert_dead_only_after_death(events, pivot_rule, t_park, proc)
    gone, why = assert_dead_only_after_death(
        events, lambda e: parked_static_evidence(rec, [view(e)], node=node.name), t_park, proc
    )
    assert gone.type == "DELETED" and "mirror pod" in why, why
    # The guard's general rule only when the kubelet posted the container terminated.
    terminated = [e for e in events if (death_evidence(rec, [view(e)]) or "").count("terminated")]
    assert all(e.t >= proc.gone - ProcessWatch.POLL_S for e in terminated)  # type: ignore[operator]
    assert proc.gone is not None
    print(
        f"[dead e2e] parked -> process stopped {proc.gone - t_park:.2f}s, pivot's rule "
        f"{first.t - t_park:.2f}s ({first.type}), mirror pod deleted {gone.t - t_park:.2f}s, "
        f"container terminated posted: {'yes' if terminated else 'no'}"
    )
    wait_for(
        "the static controller manager to lead again, its mirror pod Ready",
        lambda: static_leads(lab) and fresh_holder(lab) and mirror_ready(lab),
        180,
    )


# --- Deployment pods --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pivoted(lab: LabHandle) -> Iterator[LabHandle]:
    wait_for(
        "the static controller manager to lead, its mirror pod Ready",
        lambda: static_leads(lab) and mirror_ready(lab),
        180,
    )
    kubehoist(
        "pivot", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(lab.spec.api_node.root(lab.spec.root)),
        "--replicas", "2", "--retry-period", "500ms", "--timeout", "120",
    )  # fmt: skip
    try:
        yield lab
    finally:
        kubehoist("rollback", "--kubeconfig", str(lab.kubeconfig), "--timeout", "120", check=False)
        wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)


@dataclass
class Leader:
    rec: LeaseRecord
    pod: Pod
    baseline: Baseline


def settled_leader(lab: LabHandle) -> Leader:
    """A Deployment pod leading for a while, both replicas Ready, and its pod."""

    def ready() -> Leader | None:
        name = fresh_holder(lab).split("_")[0]
        if not name.startswith(f"{KCM}-"):
            return None
        pods = lab.client.list(Pod, namespace="kube-system", labels={"component": KCM})
        ok = [
            p
            for p in pods
            if p.metadata and p.metadata.deletionTimestamp is None and p.status
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            and any(o.kind == "ReplicaSet" for o in p.metadata.ownerReferences or [])
        ]  # fmt: skip
        mine = [p for p in ok if p.metadata and p.metadata.name == name]
        rec = lease(lab)
        if len(ok) < 2 or not mine or rec is None or rec.holder is None:
            return None
        cs = next(c for c in (mine[0].status.containerStatuses or []) if c.name == KCM)  # type: ignore[union-attr]
        base = Baseline(
            holder=rec.holder, container_id=cs.containerID or "", restarts=cs.restartCount
        )
        return Leader(rec, mine[0], base)

    wait_for("a settled Deployment leader", ready, 180)
    time.sleep(2.0)  # a few renewals seen by the standby
    got = ready()
    assert got is not None
    return got


def restarted(events: list[Seen], lead: Leader) -> Seen | None:
    """The first version showing a new instance of the leader's container running."""
    for e in events:
        c = container_of(e)
        if c.get("restartCount", 0) > lead.baseline.restarts and "running" in (
            c.get("state") or {}
        ):
            return e
    return None


def test_a_killed_leader_is_dead_by_its_replaced_container(pivoted: LabHandle) -> None:
    lab = pivoted
    lead = settled_leader(lab)
    name = str(lead.pod.metadata.name)  # type: ignore[union-attr]
    watch = PodWatch(lab)
    proc = ProcessWatch(podproc.container_pid(lab.spec, lead.pod, KCM))
    try:
        wait_for("the leader in the watch", lambda: watch.of(name), 30)
        t_kill = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        wait_for("the container restarted", lambda: restarted(watch.of(name), lead), 60)
    finally:
        watch.close()
        proc.close()
    events = watch.of(name)
    print(f"\n[dead e2e] leader SIGKILLed: {describe(events, t_kill)}")
    rule = lambda e: death_evidence(lead.rec, [view(e)], baseline=lead.baseline)  # noqa: E731
    first, why = assert_dead_only_after_death(events, rule, t_kill, proc)
    assert "replaced" in why or "terminated" in why, why
    assert proc.gone is not None
    print(
        f"[dead e2e] kill -> process stopped {proc.gone - t_kill:.3f}s, dead by '{why}' "
        f"posted {first.t - t_kill:.2f}s ({first.type})"
    )

    # The backstop rule, a new instance started after the acquire, is the only one left
    # when the previous instance is not reported (a kubelet that lost it); it needs the
    # counters to agree, and refuses when they do not.
    again = restarted(events, lead)
    assert again is not None
    stripped = json.loads(json.dumps(again.pod))
    for c in stripped["status"]["containerStatuses"]:
        c["lastState"] = {}
    bare = Seen(again.t, again.type, stripped)
    backstop = death_evidence(lead.rec, [view(bare)], baseline=lead.baseline)
    assert backstop is not None and "new container instance" in backstop, backstop
    unchanged = Baseline(
        holder=lead.baseline.holder,
        container_id=str(container_of(again).get("containerID")),
        restarts=int(container_of(again).get("restartCount", 0)),
    )
    assert death_evidence(lead.rec, [view(bare)], baseline=unchanged) is None


def test_a_deleted_leader_pod_is_dead_by_its_terminated_container(pivoted: LabHandle) -> None:
    lab = pivoted
    lead = settled_leader(lab)
    name = str(lead.pod.metadata.name)  # type: ignore[union-attr]
    watch = PodWatch(lab)
    proc = ProcessWatch(podproc.container_pid(lab.spec, lead.pod, KCM))
    try:
        wait_for("the leader in the watch", lambda: watch.of(name), 30)
        t_del = time.monotonic()
        lab.kubectl("-n", "kube-system", "delete", "pod", name, "--wait=false")
        wait_for("the pod gone", lambda: any(e.type == "DELETED" for e in watch.of(name)), 90)
    finally:
        watch.close()
        proc.close()
    events = watch.of(name)
    print(f"\n[dead e2e] leader pod deleted: {describe(events, t_del)}")
    rule = lambda e: death_evidence(lead.rec, [view(e)], baseline=lead.baseline)  # noqa: E731
    first, why = assert_dead_only_after_death(events, rule, t_del, proc)
    assert "terminated" in why, why
    gone = next(e for e in events if e.type == "DELETED")
    assert proc.gone is not None
    print(
        f"[dead e2e] delete -> process stopped {proc.gone - t_del:.2f}s, dead by '{why}' "
        f"posted {first.t - t_del:.2f}s ({first.type}); pod gone {gone.t - t_del:.2f}s"
    )


def test_a_frozen_leader_is_never_called_dead(pivoted: LabHandle) -> None:
    """SIGSTOP past the lease duration: the kubelet sees a running container (its probes
    fail, it is not Ready); no rule may call it dead. A standby takes the Lease when it
    expires, as client-go's election does by itself."""
    lab = pivoted
    lead = settled_leader(lab)
    name = str(lead.pod.metadata.name)  # type: ignore[union-attr]
    watch = PodWatch(lab)
    pid = podproc.container_pid(lab.spec, lead.pod, KCM)
    try:
        wait_for("the leader in the watch", lambda: watch.of(name), 30)
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        new = wait_for(
            "another holder", lambda: (h := fresh_holder(lab)) and h != lead.rec.holder and h, 60
        )
        t_new = time.monotonic()
        time.sleep(2.0)
        t_cont = time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)
        watch.close()
    events = watch.of(name)
    print(f"\n[dead e2e] leader frozen: {describe(events, t_stop)}")
    frozen = [e for e in events if e.t < t_cont]
    said = [
        got for e in frozen if (got := death_evidence(lead.rec, [view(e)], baseline=lead.baseline))
    ]
    assert said == [], said
    assert t_new - t_stop > 10.0  # the Lease was waited out, not released
    print(f"[dead e2e] frozen -> {new} took over after {t_new - t_stop:.1f}s (lease expiry)")
