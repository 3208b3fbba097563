"""The guard in the lab: three control planes, a worker, the controller manager pivoted
to a Deployment and `kubehoist guard install`ed on every control-plane node.

The tests run in file order on one lab (each leaves a Deployment pod leading):
install, total loss by scaling to zero, a bad rollout, the reaper on and off, a cold
start of the whole lab, then the controller managers' own logs are checked for two
leaders at once, and uninstall + rollback restore the nodes byte for byte. Times are
printed (`pytest -s`) for the closing note.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod
from prometheus_client.parser import text_string_to_metric_families

from kubehoist.election import node_of_host
from kubehoist.guard import alerts as guardalerts
from kubehoist.lab import leaderlogs, leaders, oracle, podproc
from kubehoist.pivot.probes import reconcile_probe
from tests.e2e.conftest import LabHandle, kubehoist, lab_root, node_files, start_lab

pytestmark = pytest.mark.lab

KCM = "kube-controller-manager"
MANIFEST = f"{KCM}.yaml"
GUARD = f"kubehoist-guard-{KCM}"
GRACE_S = 20.0
SETTLE_S = 10.0
LEASE_DURATION_S = 15.0


# --- helpers -----------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def lease_spec(lab: LabHandle, name: str = KCM) -> Any:
    try:
        lease = lab.client.get(Lease, name, namespace="kube-system")
    except ApiError:
        return None
    return lease.spec


def holder(lab: LabHandle) -> str:
    spec = lease_spec(lab)
    return (spec.holderIdentity if spec else None) or ""


def deployment_leads(lab: LabHandle) -> bool:
    return holder(lab).startswith(f"{KCM}-")


def static_leader_node(lab: LabHandle) -> str | None:
    host = holder(lab).rpartition("_")[0]
    return node_of_host(host, [n.name for n in lab.spec.control_planes]) if host else None


def restored_started_at(lab: LabHandle, node: str, since: float) -> float | None:
    """When the running container of `node`'s static controller manager started, if it
    is running and started at `since` (epoch seconds) or later; else None."""
    mirror = lab.client.get(Pod, f"{KCM}-{node}", namespace="kube-system")
    for cs in (mirror.status.containerStatuses if mirror.status else None) or []:
        running = cs.state.running if cs.state else None
        if running and running.startedAt and running.startedAt.timestamp() >= since:
            return running.startedAt.timestamp()
    return None


def manifests_in_place(lab: LabHandle) -> list[str]:
    return [
        n.name
        for n in lab.spec.control_planes
        if (n.manifests_dir(lab.spec.root) / MANIFEST).exists()
    ]


def guard_log(lab: LabHandle, node: str) -> list[dict[str, Any]]:
    """Every JSON line every instance of `node`'s guard has written (from the log
    keeper's archive, which outlives the pods; read at most ~1 s behind the kubelet)."""
    root = lab.spec.node(node).root(lab.spec.root) / "var/log/pods-archive"
    lines: list[dict[str, Any]] = []
    for log in sorted(root.glob(f"kube-system_{GUARD}-{node}_*/guard/*.log")):
        with open(log, errors="replace") as fh:
            for line in leaderlogs.read_cri_log(fh):
                if line.text.startswith("{"):
                    lines.append(json.loads(line.text))
    return lines


def actions(lab: LabHandle, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (n.name, rec)
        for n in lab.spec.control_planes
        for rec in guard_log(lab, n.name)
        if rec.get("event") == "action" and rec.get("action") == kind
    ]


def new_actions(lab: LabHandle, kind: str, before: int) -> list[tuple[str, dict[str, Any]]]:
    """Every `kind` action once the log keeper's archive holds more than `before` of them
    (it copies the guard's log a sweep behind the kubelet, longer on a loaded machine)."""
    wait_for(f"a {kind} action in the guards' logs", lambda: len(actions(lab, kind)) > before, 30)
    return actions(lab, kind)


def guard_events(lab: LabHandle) -> list[str]:
    out = lab.kubectl(
        "get", "events", "-n", "kube-system",
        "--field-selector", f"involvedObject.kind=Deployment,involvedObject.name={KCM}",
        "-o", "json",
    ).stdout  # fmt: skip
    return [e["reason"] for e in json.loads(out)["items"] if e["reason"].startswith("Guard")]


def ready_deployment_pods(lab: LabHandle) -> int:
    pods = lab.client.list(
        Pod,
        namespace="kube-system",
        labels={"app.kubernetes.io/managed-by": "kubehoist", "app.kubernetes.io/name": KCM},
    )
    count = 0
    for p in pods:
        conditions = (p.status.conditions if p.status else None) or []
        alive = p.metadata is not None and p.metadata.deletionTimestamp is None
        if alive and any(c.type == "Ready" and c.status == "True" for c in conditions):
            count += 1
    return count


def settled(lab: LabHandle, replicas: int = 2) -> bool:
    """A Deployment pod leads, `replicas` are Ready, and no fallback is in place."""
    return (
        deployment_leads(lab)
        and ready_deployment_pods(lab) >= replicas
        and not (manifests_in_place(lab))
    )


class LeaseTracker:
    """Polls the Lease every 0.1 s: when a Deployment pod was last seen renewing it."""

    def __init__(self, lab: LabHandle) -> None:
        self.lab = lab
        self.last_deployment_renewal: float | None = None
        self._seen: tuple[str, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                spec = lease_spec(self.lab)
            except Exception:  # the API server is down (a cold start)
                spec = None
            if spec is not None and spec.holderIdentity:
                seen = (str(spec.holderIdentity), str(spec.renewTime))
                if seen != self._seen and seen[0].startswith(f"{KCM}-"):
                    self.last_deployment_renewal = time.monotonic()
                self._seen = seen
            self._stop.wait(0.1)


def node_metrics(lab: LabHandle, node: str) -> dict[str, float]:
    """The guard's Prometheus metrics, fetched inside the node's network namespace."""
    netns = f"kh-{lab.spec.lab_id}-{node}"
    code = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:10360/metrics', timeout=5).read().decode())"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    # Read as Prometheus reads it: the text-format parser, sample names as scraped.
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(out):
        for sample in family.samples:
            if sample.name.startswith("kubehoist_guard_"):
                assert sample.labels.get("component") and sample.labels.get("node"), sample
                values[sample.name] = sample.value
                if verb := sample.labels.get("verb"):
                    values[f"{sample.name}:{verb}"] = sample.value
    # Every metric the alerting rules select (but Prometheus's own `up`) is there.
    missing = guardalerts.referenced_metrics() - {"up"} - set(values)
    assert not missing, f"the guard on {node} lacks {sorted(missing)}"
    return values


def report(label: str, figures: dict[str, float | None]) -> None:
    shown = ", ".join(f"{k} {v:.1f}s" if v is not None else f"{k} -" for k, v in figures.items())
    print(f"\n[guard e2e] {label}: {shown}")


# --- the lab ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glab() -> Iterator[tuple[LabHandle, dict[str, bytes]]]:
    root = (lab_root().parent / "guard").resolve()
    lab = start_lab(root, 16853, workers=1, control_planes=3)
    try:
        wait_for("a static controller manager to lead", lambda: static_leader_node(lab), 120)
        before = node_files(lab.spec)
        kubehoist(
            "pivot", "--kubeconfig", str(lab.kubeconfig),
            "--host-root", str(lab.spec.api_node.root(lab.spec.root)),
            "--replicas", "2", "--timeout", "120",
        )  # fmt: skip
        assert deployment_leads(lab)
        yield lab, before
    finally:
        if not os.environ.get("KUBEHOIST_TEST_KEEP_LAB"):
            kubehoist("lab", "down", "--purge", "--root", str(root), check=False)


def gkubehoist(lab: LabHandle, *args: str, check: bool = True) -> Any:
    return kubehoist(*args, "--kubeconfig", str(lab.kubeconfig), check=check)


# --- install --------------------------------------------------------------------------


def test_install_on_every_control_plane_node(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    lab, _ = glab
    files = node_files(lab.spec)
    dry = gkubehoist(lab, "guard", "install", "--dry-run")
    assert dry.stdout.count("(dry run) node/") == 2 * len(lab.spec.control_planes), dry.stdout
    assert node_files(lab.spec) == files

    started = time.monotonic()
    out = gkubehoist(
        lab, "guard", "install", "--settle", f"{SETTLE_S:g}", "--grace", f"{GRACE_S:g}"
    )
    report("install on 3 nodes", {"wall": time.monotonic() - started})
    for node in lab.spec.control_planes:
        assert f"node/{node.name}: guard {GUARD} installed" in out.stdout, out.stdout
        etc = node.root(lab.spec.root) / "etc/kubernetes"
        assert (etc / "manifests" / f"{GUARD}.yaml").is_file()
        conf = etc / "kubehoist/guard.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        doc = yaml.safe_load(conf.read_text())
        cert = x509.load_pem_x509_certificate(
            base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
        )
        assert cert.subject.rfc4514_string() == f"CN=kubehoist:guard:{node.name},O=kubehoist:guards"
        assert doc["clusters"][0]["cluster"]["server"] == "https://172.29.0.1:6443"
    assert "held by" in out.stdout
    # Nothing of the install is left in the cluster but the RBAC and the guards' Lease.
    left = lab.kubectl("get", "secrets,csr", "-A", "-o", "name").stdout
    assert "kubehoist-guard" not in left, left
    # The guard's identity may do what it needs and nothing more.
    conf = lab.spec.control_planes[0].root(lab.spec.root) / "etc/kubernetes/kubehoist/guard.conf"
    host_server = f"https://127.0.0.1:{lab.spec.host_port}"

    def can(*what: str) -> str:
        return lab.kubectl(
            "--kubeconfig", str(conf), "--server", host_server, "auth", "can-i", *what,
            "-n", "kube-system", check=False,
        ).stdout.strip()  # fmt: skip

    assert can("update", f"leases/{KCM}") == "yes"
    assert can("update", "leases/kube-scheduler") == "no"
    assert can("delete", "pods") == "no"
    assert can("get", "secrets") == "no"
    assert can("create", "events") == "yes"
    # status shows the guards: one leads, all three Ready.
    doc = json.loads(gkubehoist(lab, "status", KCM, "-o", "json", check=False).stdout)
    guard = next(c for c in doc["components"] if c["component"] == KCM)["guard"]
    assert guard["installed"] is True
    assert guard["leader"] in {n.name for n in lab.spec.control_planes}, guard
    assert sorted(p["node"] for p in guard["pods"] if p["ready"]) == sorted(
        n.name for n in lab.spec.control_planes
    ), guard["pods"]
    assert "signed on the node" in out.stdout, out.stdout
    # Installing again (a certificate renewal), this time through the cluster's signer:
    # only the certificates change.
    manifest = lab.spec.control_planes[0].manifests_dir(lab.spec.root) / f"{GUARD}.yaml"
    before = manifest.read_bytes()
    again = gkubehoist(
        lab, "guard", "install", "--settle", f"{SETTLE_S:g}", "--grace", f"{GRACE_S:g}",
        "--issuer", "csr",
    )  # fmt: skip
    assert "signed by kubernetes.io/kube-apiserver-client" in again.stdout, again.stdout
    assert manifest.read_bytes() == before
    left = lab.kubectl("get", "secrets,csr", "-A", "-o", "name").stdout
    assert "kubehoist-guard" not in left, left


# --- total loss ------------------------------------------------------------------------


def _total_loss(
    lab: LabHandle,
    label: str,
    break_it: Callable[[], object],
    fix_it: Callable[[], object],
    *,
    cold_start: bool = False,
) -> float:
    """`cold_start`: the guards start with the cluster; a guard that has just started
    cannot trust a renewal it did not see, so it watches the Lease for a lease duration
    (15 s) before its grace runs, and it starts after the kubelet has (re)started it."""
    wait_for("a settled Deployment", lambda: settled(lab), 180)
    parked_before = {
        n.name: (n.root(lab.spec.root) / "etc/kubernetes/kubehoist/parked" / MANIFEST).read_bytes()
        for n in lab.spec.control_planes
    }
    fallbacks_before = len(actions(lab, "Fallback"))
    try:
        with LeaseTracker(lab) as tracker:
            t0 = time.monotonic()
            break_it()
            wait_for("no Deployment replica Ready", lambda: ready_deployment_pods(lab) == 0, 120)
            t_gone = time.monotonic()
            back = wait_for(
                "a fallback manifest", lambda: manifests_in_place(lab), GRACE_S + 60, every=0.05
            )
            t_back, wall_back = time.monotonic(), time.time()
            node = wait_for("the fallback static pod to lead", lambda: static_leader_node(lab), 60)
            t_leads = time.monotonic()
            last_renewal = tracker.last_deployment_renewal
        assert last_renewal is not None
        assert back == [node], (back, node)  # one guard fell back; the others waited
        # The restored static pod's container started at once (the kubelet's own startedAt,
        # whole seconds, against when the manifest was seen back, polled every 0.05 s).
        # The mirror pod has the UID of the static pod's earlier runs (the UID is a hash of
        # the manifest). Once, in CI, the first read after the static pod led showed a
        # terminated container (exit 2, what this controller manager returns on SIGTERM)
        # although the Lease's holder ran on: wait (10 s at most) for the status of a
        # running container started after the manifest came back (startedAt has whole
        # seconds, hence 1 s of slack); its start is the figure.
        started: float = wait_for(
            "the mirror pod to show the restored container running",
            lambda: restored_started_at(lab, node, wall_back - 1.0),
            10,
            every=0.1,
        )
        restore_s = round(started - wall_back, 1)
        fallback = new_actions(lab, "Fallback", fallbacks_before)
        probe_s = reconcile_probe(lab.client, timeout=60)
        # The fallback stays while the Deployment cannot take over.
        time.sleep(3)
        assert manifests_in_place(lab) == [node]
        assert len(fallback) == fallbacks_before + 1, fallback
    except BaseException:
        # Leave the lab whole for the tests after this one: the Deployment back and
        # leading, the fallback parked again by the guards (best effort: this test's own
        # failure is the one reported).
        fix_it()
        with contextlib.suppress(AssertionError):
            wait_for("the fallback parked again", lambda: not manifests_in_place(lab), 180)
            wait_for("a Deployment pod to lead", lambda: deployment_leads(lab), 60)
        raise
    fix_it()
    t_fix = time.monotonic()
    wait_for("the fallback parked again", lambda: not manifests_in_place(lab), SETTLE_S + 120)
    t_parked = time.monotonic()
    wait_for("a Deployment pod to lead", lambda: deployment_leads(lab), 60, every=0.1)
    t_dep = time.monotonic()
    report(
        label,
        {
            "break -> no replica Ready": t_gone - t0,
            "break -> last Deployment renewal": max(0.0, last_renewal - t0),
            "last renewal or loss -> static leads": t_leads - max(last_renewal, t_gone),
            "break -> fallback manifest back": t_back - t0,
            "break -> static pod leads": t_leads - t0,
            "manifest back -> container started": restore_s,
            "reconcile probe": probe_s,
            "fix -> fallback parked": t_parked - t_fix,
            "parked -> Deployment pod leads": t_dep - t_parked,
        },
    )
    # Within grace + 15 s of the last leader's last renewal (or of the last replica
    # going away; after a cold start, of the cluster being up again, plus a lease
    # duration of the guard's own watching and 10 s for the kubelet to start it).
    since = t_leads - max(last_renewal, t_gone)
    assert since <= GRACE_S + 15 + (15 + 10 if cold_start else 0), since
    # The parked manifest is the original, byte for byte, on every node.
    for n in lab.spec.control_planes:
        parked = n.root(lab.spec.root) / "etc/kubernetes/kubehoist/parked" / MANIFEST
        assert parked.read_bytes() == parked_before[n.name], n.name
        marker = n.root(lab.spec.root) / f"etc/kubernetes/kubehoist/guard/{MANIFEST}.fallback.json"
        assert not marker.exists(), n.name
    reasons = guard_events(lab)
    assert "GuardFallback" in reasons and "GuardHandBack" in reasons, reasons
    # The guard's own metrics, read on its node (hostNetwork, 127.0.0.1:10360).
    metrics = node_metrics(lab, node)
    assert metrics["kubehoist_guard_fallbacks_total"] >= 1, metrics
    assert metrics["kubehoist_guard_handbacks_total"] >= 1, metrics
    assert metrics["kubehoist_guard_api_reachable"] == 1, metrics
    # Its pods come from watches, not a LIST a round: over 10 s of rounds (a Lease GET
    # each) at most the two selectors' periodic re-LIST.
    time.sleep(10)
    later = node_metrics(lab, node)
    rounds = (
        later["kubehoist_guard_round_seconds_count"]
        - metrics["kubehoist_guard_round_seconds_count"]
    )
    lists = later.get("kubehoist_guard_api_requests_total:list", 0) - metrics.get(
        "kubehoist_guard_api_requests_total:list", 0
    )
    assert rounds >= 5 and lists <= 2, (rounds, lists)
    print(f"[guard e2e] {label}: fallback said {fallback[-1][1].get('result')}, "
          f"cleared {fallback[-1][1].get('cleared', 0)}")  # fmt: skip
    return restore_s


def test_total_loss_scaled_to_zero_three_times_in_a_row(
    glab: tuple[LabHandle, dict[str, bytes]],
) -> None:
    """Fallback -> hand-back, three cycles in a row: the parked manifest is the same
    bytes every time (so the same static pod to the kubelet, with its crash back-off);
    each restore must start the container at once."""
    lab, _ = glab
    restores = [
        _total_loss(
            lab,
            f"total loss: scaled to 0 (cycle {cycle})",
            lambda: lab.kubectl("-n", "kube-system", "scale", f"deployment/{KCM}", "--replicas=0"),
            lambda: lab.kubectl("-n", "kube-system", "scale", f"deployment/{KCM}", "--replicas=2"),
        )
        for cycle in (1, 2, 3)
    ]
    print(f"\n[guard e2e] fallback manifest back -> container started, 3 cycles: {restores} s")
    # The back-off's first step would be 10 s; startedAt has whole seconds.
    assert max(restores) < 6.0, restores


def test_total_loss_by_a_bad_rollout(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    lab, _ = glab
    dep = lab.client.get(Deployment, KCM, namespace="kube-system")
    assert dep.spec is not None
    image = dep.spec.template.spec.containers[0].image  # type: ignore[union-attr]
    strategy = dep.spec.strategy.to_dict() if dep.spec.strategy else {}

    def patch(body: dict[str, Any]) -> None:
        lab.kubectl("-n", "kube-system", "patch", f"deployment/{KCM}", "-p", json.dumps(body))

    def container(img: str) -> dict[str, Any]:
        return {"spec": {"template": {"spec": {"containers": [{"name": KCM, "image": img}]}}}}

    def break_it() -> None:
        patch({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}})
        patch(container("registry.invalid/kube-controller-manager:broken"))

    def fix_it() -> None:
        patch(container(str(image)))

    _total_loss(lab, "total loss: a rollout to an image that cannot be pulled", break_it, fix_it)
    patch({"spec": {"strategy": strategy}})
    wait_for("a settled Deployment", lambda: settled(lab), 180)


# --- the reaper -------------------------------------------------------------------------


def _kill_leader(lab: LabHandle) -> dict[str, float | None]:
    wait_for("a settled Deployment", lambda: settled(lab), 180)
    time.sleep(2.5)  # the standbys have seen a renewal or two
    before = lab.client.get(Lease, KCM, namespace="kube-system")
    old = (before.spec.holderIdentity if before.spec else None) or ""
    pod_name = old.split("_")[0]
    pod = lab.client.get(Pod, pod_name, namespace="kube-system")
    t0 = time.monotonic()
    t0_wall = dt.datetime.now(dt.UTC)
    podproc.kill_container(lab.spec, pod, KCM, signal.SIGKILL)
    wait_for("a new leader", lambda: holder(lab) not in ("", old), 60, every=0.05)
    t_new = time.monotonic()
    # Every version of the Lease since the kill, replayed by the API server from the
    # version before it: a release is seen however soon a standby took over (a poll
    # can miss a release that lasts less than one of its GETs).
    released: float | None = None
    assert before.metadata is not None
    versions = lab.client.watch(
        Lease,
        namespace="kube-system",
        fields={"metadata.name": KCM},
        resource_version=before.metadata.resourceVersion,
        server_timeout=30,
    )
    for _typ, lease in versions:
        h = (lease.spec.holderIdentity if lease.spec else None) or ""
        if h == "" and released is None and lease.spec and lease.spec.renewTime:
            released = (lease.spec.renewTime - t0_wall).total_seconds()  # the releaser's clock
        if h not in ("", old):
            break
    probe_s = reconcile_probe(lab.client, timeout=60)
    return {
        "kill -> Lease released": released,
        "kill -> new holder": t_new - t0,
        "kill -> controllers reconcile": time.monotonic() - t0,
        "reconcile probe": probe_s,
    }


def test_reaper_on_and_off(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    lab, _ = glab
    reaps_before = len(actions(lab, "Reap"))
    on = _kill_leader(lab)
    report("leader SIGKILLed, reaper on", on)
    reaps = new_actions(lab, "Reap", reaps_before)
    assert len(reaps) == reaps_before + 1, reaps
    evidence = reaps[-1][1]["evidence"]
    assert any(w in evidence for w in ("started at", "terminated", "replaced")), evidence
    assert on["kill -> Lease released"] is not None
    new_holder = on["kill -> new holder"]
    assert new_holder is not None and new_holder < 10.0

    gkubehoist(lab, "guard", "install", "--settle", f"{SETTLE_S:g}", "--no-reaper")
    try:
        off = _kill_leader(lab)
        report("leader SIGKILLed, reaper off", off)
        assert len(actions(lab, "Reap")) == reaps_before + 1
        assert off["kill -> Lease released"] is None
        gap = off["kill -> new holder"]
        assert gap is not None and gap > 10.0  # the lease duration, waited out
    finally:
        gkubehoist(lab, "guard", "install", "--settle", f"{SETTLE_S:g}")


# --- cold start ---------------------------------------------------------------------------


def _restart_lab(lab: LabHandle) -> None:
    root = str(lab.spec.root)
    kubehoist("lab", "down", "--root", root)
    kubehoist("lab", "up", "--root", root)


def _fresh_holder(lab: LabHandle) -> str | None:
    """A holder whose Lease is renewed now (not the one left from before the stop)."""
    spec = lease_spec(lab)
    if spec is None or not spec.holderIdentity or spec.renewTime is None:
        return None
    age = time.time() - spec.renewTime.timestamp()
    return str(spec.holderIdentity) if age < 5 else None


def test_cold_start_comes_back_by_itself(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    lab, _ = glab
    wait_for("a settled Deployment", lambda: settled(lab), 180)
    fallbacks_before = len(actions(lab, "Fallback"))
    t0 = time.monotonic()
    _restart_lab(lab)
    t_up = time.monotonic()
    first = wait_for("a controller manager to lead again", lambda: _fresh_holder(lab), 240)
    t_leads = time.monotonic()
    probe_s = reconcile_probe(lab.client, timeout=120)
    report(
        "cold start of the whole lab",
        {"lab down + up": t_up - t0, "up -> a leader": t_leads - t_up, "reconcile probe": probe_s},
    )
    print(f"[guard e2e] cold start: first leader {first}")
    wait_for("a settled Deployment after the cold start", lambda: settled(lab), 300)
    # By itself: a Deployment pod leads again and no guard fell back.
    assert first.startswith(f"{KCM}-"), first
    time.sleep(2)  # the log keeper's copy is at most ~1 s behind
    assert len(actions(lab, "Fallback")) == fallbacks_before, actions(lab, "Fallback")


def test_cold_start_with_every_replica_gone(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    """The cluster stops while no replica exists (the guards had no time to act): after
    the start, the guards bring the static pod back."""
    lab, _ = glab

    def break_it() -> None:
        lab.kubectl("-n", "kube-system", "scale", f"deployment/{KCM}", "--replicas=0")
        wait_for("no Deployment replica", lambda: ready_deployment_pods(lab) == 0, 60)
        _restart_lab(lab)

    _total_loss(
        lab,
        "cold start with every replica gone",
        break_it,
        lambda: lab.kubectl("-n", "kube-system", "scale", f"deployment/{KCM}", "--replicas=2"),
        cold_start=True,
    )


# --- uninstall and rollback ---------------------------------------------------------------


def test_uninstall_then_rollback_restores_byte_for_byte(
    glab: tuple[LabHandle, dict[str, bytes]],
) -> None:
    lab, before = glab
    wait_for("a settled Deployment", lambda: settled(lab), 180)
    out = gkubehoist(lab, "guard", "uninstall")
    for node in lab.spec.control_planes:
        assert f"node/{node.name}: guard {GUARD} removed" in out.stdout, out.stdout
    wait_for(
        "the guard pods to be gone",
        lambda: (
            not [
                p
                for p in lab.client.list(Pod, namespace="kube-system")
                if p.metadata and (p.metadata.name or "").startswith(GUARD)
            ]
        ),
        60,
    )
    left = lab.kubectl("get", "roles,rolebindings,leases", "-n", "kube-system", "-o", "name").stdout
    assert "kubehoist" not in left, left
    gkubehoist(lab, "rollback", "--timeout", "120")
    assert static_leader_node(lab)
    after = node_files(lab.spec)
    # Every file is as before the pivot (guard.conf and guard markers are gone too).
    assert after == before, sorted(set(after) ^ set(before))


# --- never two leaders ---------------------------------------------------------------------


def test_never_two_leaders_in_any_of_these(glab: tuple[LabHandle, dict[str, bytes]]) -> None:
    """Over every test above, strictly: the controller managers' own logs and the
    runtime's exits (each lead interval lasts until its process's last sign of acting)
    never show two processes leading at once beyond the measurement error (100 ms);
    no guard fell back while one led, nor reaped a holder that was alive."""
    lab, _ = glab
    time.sleep(2.5)  # two sweeps of the log keeper: the last lines and ends are in
    judged = oracle.judge(lab.spec.root, KCM)
    result = judged.leaders
    assert result.tolerance == leaders.DEFAULT_TOLERANCE_S == 0.1
    out = kubehoist("lab", "leaders", "--root", str(lab.spec.root), check=False)
    print(f"\n{out.stdout}")
    assert result.overlaps == (), [o.describe() for o in result.overlaps]
    assert result.frozen == ()  # nothing here froze a leader
    assert judged.violations == (), [v.text for v in judged.violations]
    assert {a.action for a in judged.actions} >= {"Fallback", "HandBack", "Reap"}
    assert out.returncode == 0, out.stderr
    # static (pivot, fallbacks, rollback) and Deployment pods (pivot, hand-backs, reaps)
    kinds = {"static" if i.instance.pod.endswith(tuple(n.name for n in lab.spec.control_planes))
             else "deployment" for i in result.intervals}  # fmt: skip
    assert kinds == {"static", "deployment"}, kinds
    assert len(result.intervals) >= 10, len(result.intervals)
