"""The release gate on the lab's v1.36 controller manager: pivot with
--release-lease-on-exit turns ControllerManagerReleaseLeaderElectionLockOnExit on, and
a leader whose pod is deleted (SIGTERM) empties the Lease before it exits, so a standby
leads long before the lease duration (15 s) would have passed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease

from tests.e2e.conftest import LabHandle, kubehoist
from tests.e2e.test_pivot import (
    COMPONENT,
    holder,
    pivot_args,
    rollback_args,
    static_leads,
    wait_for,
)

pytestmark = pytest.mark.lab

GATE = "ControllerManagerReleaseLeaderElectionLockOnExit"


@pytest.fixture
def pivoted_with_gate(lab: LabHandle) -> Iterator[None]:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    kubehoist(*pivot_args(lab, "--release-lease-on-exit"))
    yield
    kubehoist(*rollback_args(lab), check=False)
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)


def test_a_deleted_leader_releases_its_lease(lab: LabHandle, pivoted_with_gate: None) -> None:
    dep = lab.client.get(Deployment, COMPONENT, namespace="kube-system")
    assert dep.spec is not None
    command = dep.spec.template.spec.containers[0].command or []  # type: ignore[union-attr]
    assert f"--feature-gates={GATE}=true" in command
    lease = lab.client.get(Lease, COMPONENT, namespace="kube-system")
    assert lease.spec is not None and lease.spec.leaseDurationSeconds == 15
    old = holder(lab)
    assert old.startswith(f"{COMPONENT}-"), old
    pod = old.rpartition("_")[0]
    last_renew = lease.spec.renewTime
    start = time.monotonic()
    lab.kubectl("delete", "pod", "-n", "kube-system", pod, "--wait=false")
    released = False
    new_lease = lease
    while time.monotonic() - start < 90:
        new_lease = lab.client.get(Lease, COMPONENT, namespace="kube-system")
        assert new_lease.spec is not None
        now = new_lease.spec.holderIdentity or ""
        if now == old:
            last_renew = new_lease.spec.renewTime
        released = released or now == ""
        if now and now != old:
            break
        time.sleep(0.05)
    took = time.monotonic() - start
    assert new_lease.spec is not None
    new = new_lease.spec.holderIdentity or ""
    assert new and new != old, f"no new leader after {took:.1f}s"
    # A standby takes a Lease it has not seen released only once it has seen the
    # holder's last renewal age a whole lease duration (15 s) by its own clock: a new
    # acquireTime sooner than that after the old holder's last renewal is the release.
    assert last_renew is not None and new_lease.spec.acquireTime is not None
    gap = (new_lease.spec.acquireTime - last_renew).total_seconds()
    print(
        f"leader pod deleted -> new leader {new} after {took:.2f}s; acquired "
        f"{gap:.2f}s after the old leader's last renewal seen (released seen: {released})"
    )
    assert gap < 15, f"new leader acquired {gap:.1f}s after the last renewal: no release"
