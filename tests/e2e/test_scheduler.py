"""kube-scheduler, the same way: pivot to a Deployment, a leader that schedules, the
guard's reaper, and rollback byte for byte — on a lab of its own (one control plane,
one worker)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.lab import podproc
from kubehoist.pivot.probes import schedule_probe
from tests.e2e.conftest import LabHandle, kubehoist, lab_root, node_files, start_lab

pytestmark = pytest.mark.lab

SCHED = "kube-scheduler"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def holder(lab: LabHandle) -> str:
    try:
        lease = lab.client.get(Lease, SCHED, namespace="kube-system")
    except ApiError:
        return ""
    return (lease.spec.holderIdentity if lease.spec else None) or ""


@pytest.fixture(scope="module")
def slab() -> Iterator[LabHandle]:
    root = (lab_root().parent / "scheduler").resolve()
    lab = start_lab(root, 16863, workers=1)
    try:
        yield lab
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(root), check=False)


def test_scheduler_pivot_guard_and_rollback(slab: LabHandle) -> None:
    lab = slab
    cp = lab.spec.api_node
    wait_for("the static scheduler to lead", lambda: holder(lab).startswith(f"{cp.name}_"))
    before = node_files(lab.spec)
    kc = str(lab.kubeconfig)
    out = kubehoist(
        "pivot", SCHED, "--kubeconfig", kc, "--host-root", str(cp.root(lab.spec.root)),
        "--timeout", "120",
    )  # fmt: skip
    assert "a probe pod was scheduled in" in out.stderr, out.stderr
    assert holder(lab).startswith(f"{SCHED}-"), holder(lab)
    assert not (cp.manifests_dir(lab.spec.root) / f"{SCHED}.yaml").exists()
    print(f"\n[scheduler e2e] scheduling probe after the pivot: {schedule_probe(lab.client):.2f}s")

    # The guard, for the scheduler: a killed leader is reaped.
    kubehoist("guard", "install", "--component", SCHED, "--kubeconfig", kc)
    time.sleep(3)
    old = holder(lab)
    pod = lab.client.get(Pod, old.split("_")[0], namespace="kube-system")
    t0 = time.monotonic()
    podproc.kill_container(lab.spec, pod, SCHED, signal.SIGKILL)
    wait_for("a new scheduler leader", lambda: holder(lab) not in ("", old), 60)
    took = time.monotonic() - t0
    print(f"[scheduler e2e] leader SIGKILLed -> new holder with the reaper: {took:.1f}s")
    assert took < 10.0
    assert schedule_probe(lab.client) < 30

    kubehoist("guard", "uninstall", "--component", SCHED, "--kubeconfig", kc)
    out = kubehoist("rollback", SCHED, "--kubeconfig", kc, "--timeout", "120")
    assert "runs from its static pods again" in out.stderr, out.stderr
    assert holder(lab).startswith(f"{cp.name}_")
    assert node_files(lab.spec) == before
