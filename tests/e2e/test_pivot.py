"""pivot and rollback in the lab: a single control plane (the session lab) and three."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.election import node_of_host
from tests.e2e.conftest import LabHandle, kubehoist, lab_root, node_files, start_lab

pytestmark = pytest.mark.lab

PHASE_TIME = re.compile(r"^\[(\d)/\d\] ([a-z-]+): (.*) \((\d+\.\d+)s\)$", re.MULTILINE)

COMPONENT = "kube-controller-manager"
MANIFEST = f"{COMPONENT}.yaml"


def holder(lab: LabHandle) -> str:
    try:
        lease = lab.client.get(Lease, COMPONENT, namespace="kube-system")
    except ApiError:
        return ""
    return (lease.spec.holderIdentity if lease.spec else None) or ""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def static_leads(lab: LabHandle) -> bool:
    host = holder(lab).rpartition("_")[0]
    return node_of_host(host, [n.name for n in lab.spec.control_planes]) is not None


def kube_system_objects(lab: LabHandle) -> set[str]:
    """kind/name@resourceVersion of the kube-system objects a pivot creates or changes
    (workloads, PDBs, and every Secret and ConfigMap but the ones the controller
    manager keeps making on its own while a fresh cluster settles)."""
    out = lab.kubectl(
        "get", "deployments,replicasets,pods,secrets,configmaps,poddisruptionbudgets",
        "-n", "kube-system", "-o", "json",
    ).stdout  # fmt: skip
    own = ("bootstrap-token-", "kube-root-ca.crt")
    return {
        f"{i['kind']}/{i['metadata']['name']}"
        + ("" if i["kind"] == "Pod" else f"@{i['metadata']['resourceVersion']}")
        for i in json.loads(out)["items"]
        if not i["metadata"]["name"].startswith(own)
    }


def pivot_args(lab: LabHandle, *extra: str) -> list[str]:
    return [
        "pivot", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(lab.spec.api_node.root(lab.spec.root)),
        "--retry-period", "500ms", "--timeout", "120", *extra,
    ]  # fmt: skip


def rollback_args(lab: LabHandle, *extra: str) -> list[str]:
    return ["rollback", "--kubeconfig", str(lab.kubeconfig), "--timeout", "120", *extra]


@pytest.fixture
def clean_after(lab: LabHandle) -> Iterator[None]:
    """Whatever a test leaves, the next one starts from the static pods leading."""
    yield
    kubehoist(*rollback_args(lab), check=False)
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)


def test_dry_run_changes_nothing(lab: LabHandle, clean_after: None) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    files, objects = node_files(lab.spec), kube_system_objects(lab)
    out = kubehoist(*pivot_args(lab, "--dry-run"))
    assert "would server-side apply Deployment kube-system/kube-controller-manager" in out.stderr
    assert f"would move cp-1:/etc/kubernetes/manifests/{MANIFEST}" in out.stderr
    assert "nothing was changed" in out.stderr
    assert node_files(lab.spec) == files
    assert kube_system_objects(lab) == objects


def test_pivot_then_rollback_restores_byte_for_byte(lab: LabHandle, clean_after: None) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    before = node_files(lab.spec)
    out = kubehoist(*pivot_args(lab))
    assert "[7/7] verify:" in out.stderr, out.stderr
    # A Deployment pod leads; the manifest is parked byte for byte with its record.
    assert holder(lab).startswith(f"{COMPONENT}-"), holder(lab)
    cp = lab.spec.api_node.root(lab.spec.root) / "etc/kubernetes"
    assert not (cp / "manifests" / MANIFEST).exists()
    parked = cp / "kubehoist/parked" / MANIFEST
    assert (
        parked.read_bytes() == before[str((cp / "manifests" / MANIFEST).relative_to(lab.spec.root))]
    )
    record = json.loads((cp / "kubehoist/parked" / (MANIFEST + ".kubehoist.json")).read_text())
    assert record["from"] == f"/etc/kubernetes/manifests/{MANIFEST}"
    status = kubehoist("status", "--kubeconfig", str(lab.kubeconfig), COMPONENT, "-o", "json")
    assert '"Healthy"' in status.stdout

    out = kubehoist(*rollback_args(lab))
    assert "runs from its static pods again" in out.stderr, out.stderr
    assert static_leads(lab)
    assert node_files(lab.spec) == before
    with pytest.raises(ApiError):
        lab.client.get(Deployment, COMPONENT, namespace="kube-system")
    left = lab.kubectl(
        "get", "all,secrets,configmaps,pdb", "-n", "kube-system",
        "-l", "app.kubernetes.io/managed-by=kubehoist", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""


def test_standbys_never_ready_stop_before_retire(lab: LabHandle, clean_after: None) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    before = node_files(lab.spec)
    image = "registry.invalid/kube-controller-manager:v1.36.3"
    out = kubehoist(*pivot_args(lab, "--image", image, "--timeout", "25"), check=False)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: ")
        and "standbys not Ready" in last
        and "nothing was retired" in last
    )
    assert node_files(lab.spec) == before
    assert static_leads(lab)
    left = lab.kubectl(
        "get", "deployments,secrets,configmaps,pdb", "-n", "kube-system",
        "-l", "app.kubernetes.io/managed-by=kubehoist", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""


@pytest.mark.parametrize("phase", ["deploy", "standby", "retire", "handover", "verify"])
def test_killed_pivot_resumes_and_rolls_back(lab: LabHandle, clean_after: None, phase: str) -> None:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    before = node_files(lab.spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubehoist", *pivot_args(lab)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"] {phase}: " in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"pivot finished before {phase}:\n{''.join(seen)}"
    # Resume: the same command finishes the job.
    out = kubehoist(*pivot_args(lab))
    assert "[7/7] verify:" in out.stderr, out.stderr
    assert holder(lab).startswith(f"{COMPONENT}-")
    kubehoist(*rollback_args(lab))
    assert node_files(lab.spec) == before
    assert static_leads(lab)


def test_rollback_of_a_killed_pivot(lab: LabHandle, clean_after: None) -> None:
    """Killed right after retire: rollback alone restores everything."""
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    before = node_files(lab.spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubehoist", *pivot_args(lab)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    killed = False
    for line in proc.stderr:
        if "] handover: " in line:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=60)
    # The kill happened, mid-pivot: not a pivot that ended by itself.
    assert killed and proc.returncode == -signal.SIGKILL, proc.returncode
    out = kubehoist(*rollback_args(lab))
    assert "runs from its static pods again" in out.stderr, out.stderr
    assert node_files(lab.spec) == before
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 60)


def test_three_control_planes_pivot_and_rollback() -> None:
    root = (lab_root().parent / "pivot-ha").resolve()
    lab = start_lab(root, 16843, workers=2, control_planes=3)
    try:
        wait_for("a static controller manager to lead", lambda: static_leads(lab), 120)
        before = node_files(lab.spec)
        out = kubehoist(*pivot_args(lab, "--replicas", "2"))
        assert "[7/7] verify:" in out.stderr, out.stderr
        for node in lab.spec.control_planes:
            assert not (node.manifests_dir(lab.spec.root) / MANIFEST).exists(), node.name
        assert holder(lab).startswith(f"{COMPONENT}-")
        kubehoist(*rollback_args(lab))
        assert node_files(lab.spec) == before
        assert static_leads(lab)
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(root), check=False)
    assert not Path(root).exists()


def test_five_pivot_rollback_cycles_restore_promptly(lab: LabHandle, clean_after: None) -> None:
    """The kubelet keys a static pod on its manifest's content and path: a manifest put
    back byte for byte is the same pod, and without clearing its stopped sandbox first
    the restored pod waits out the crash back-off (10, 20, 40, 80 s … within ten
    minutes). Five cycles in a row, each restore timed: manifest back -> container
    started (the kubelet's own startedAt), and -> Ready (the startup probe's 10 s
    period dominates that one)."""
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    before = node_files(lab.spec)
    started_s: list[float] = []
    ready_s: list[float] = []
    cleared: list[str] = []
    mirror = f"{COMPONENT}-{lab.spec.api_node.name}"
    for _cycle in range(5):
        kubehoist(*pivot_args(lab))
        t_start = time.time()
        out = kubehoist(*rollback_args(lab))
        phases = {
            m.group(2): (m.group(3), float(m.group(4))) for m in PHASE_TIME.finditer(out.stderr)
        }
        assert "restore" in phases and "static-ready" in phases, out.stderr
        # The manifest is back at the end of the restore phase (±0.1 s of its timing).
        restored_at = t_start + phases["restore"][1]
        pod = lab.client.get(Pod, mirror, namespace="kube-system")
        (cs,) = (pod.status.containerStatuses if pod.status else None) or []
        assert cs.state is not None and cs.state.running is not None, cs
        assert cs.state.running.startedAt is not None
        started_s.append(round(cs.state.running.startedAt.timestamp() - restored_at, 1))
        ready_s.append(phases["static-ready"][1])
        cleared.append(phases["restore"][0])
        assert node_files(lab.spec) == before
        wait_for("the static controller manager to lead", lambda: static_leads(lab))
    print(
        f"\nrestore -> container started, 5 cycles: {started_s} s; -> Ready {ready_s} s; "
        f"restore said: {cleared}"
    )
    # Every restore asked the node's runtime for the parked pod's stopped sandboxes and
    # removed what it found (the kubelet sometimes has removed them already: cleared-0) ...
    assert all("cleared-" in c for c in cleared), cleared
    # ... and the container started at once every time: the back-off's first step
    # would be 10 s (startedAt has whole seconds: +1 s).
    assert max(started_s) < 6.0, started_s
