"""Pod status building: phase, conditions and container statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubehoist.lab.kubelet.status import (
    ContainerSnapshot,
    PodSnapshot,
    State,
    build_status,
    owned_conditions,
    phase,
    transition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cs(
    state: State,
    *,
    last: State | None = None,
    ready: bool = False,
    restarts: int = 0,
    name: str = "c",
) -> ContainerSnapshot:
    return ContainerSnapshot(
        name=name,
        image="busybox",
        image_id="lab://busybox",
        container_id="lab://1",
        state=state,
        last_state=last,
        ready=ready,
        started=state.kind == "running",
        restart_count=restarts,
    )


def pod(
    *containers: ContainerSnapshot, policy: str = "Always", init: tuple[ContainerSnapshot, ...] = ()
) -> PodSnapshot:
    return PodSnapshot(
        restart_policy=policy,
        pod_ip="10.244.1.2",
        host_ip="172.29.0.12",
        start_time=T0,
        sandbox_ready=True,
        init_containers=init,
        containers=containers,
    )


RUNNING = State("running", started_at=T0)
CREATING = State("waiting", "ContainerCreating")
FAILED = State("terminated", "Error", exit_code=1)
DONE = State("terminated", "Completed", exit_code=0)
BACKOFF = State("waiting", "CrashLoopBackOff", "back-off 10s")


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (pod(cs(CREATING)), "Pending"),
        (pod(cs(RUNNING)), "Running"),
        (pod(cs(BACKOFF, last=FAILED)), "Running"),  # CrashLoopBackOff is still Running
        (pod(cs(DONE), policy="Never"), "Succeeded"),
        (pod(cs(FAILED), policy="Never"), "Failed"),
        (pod(cs(FAILED), policy="OnFailure"), "Running"),
        (pod(cs(DONE), policy="OnFailure"), "Succeeded"),
        (pod(cs(RUNNING), cs(CREATING, name="d")), "Pending"),
        (pod(cs(CREATING), init=(cs(RUNNING, name="i"),)), "Pending"),
        (pod(cs(CREATING), policy="Never", init=(cs(FAILED, name="i"),)), "Failed"),
    ],
)
def test_phase(snapshot: PodSnapshot, expected: str) -> None:
    assert phase(snapshot) == expected


def test_ready_conditions_follow_container_readiness() -> None:
    assert owned_conditions(pod(cs(RUNNING, ready=True)))["Ready"] is True
    assert owned_conditions(pod(cs(RUNNING, ready=True), cs(RUNNING, name="d")))["Ready"] is False


def test_transition_time_kept_while_the_value_stays() -> None:
    first = transition({}, {"Ready": False}, T0)
    later = transition(first, {"Ready": False}, T0 + timedelta(seconds=5))
    assert later["Ready"] == (False, T0)
    flipped = transition(later, {"Ready": True}, T0 + timedelta(seconds=9))
    assert flipped["Ready"] == (True, T0 + timedelta(seconds=9))


def test_status_body() -> None:
    snap = pod(
        cs(
            RUNNING,
            last=State("terminated", "Error", exit_code=137, container_id="lab://0"),
            ready=True,
            restarts=1,
        )
    )
    conds = transition({}, owned_conditions(snap), T0)
    scheduled = {"type": "PodScheduled", "status": "True"}
    body = build_status(snap, conds, foreign_conditions=[scheduled, {"type": "Ready"}])
    assert body["phase"] == "Running"
    assert body["podIP"] == "10.244.1.2" and body["podIPs"] == [{"ip": "10.244.1.2"}]
    assert body["conditions"][0] == scheduled
    assert [c["type"] for c in body["conditions"]] == [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]
    (status,) = body["containerStatuses"]
    assert status["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["lastState"]["terminated"]["containerID"] == "lab://0"
    assert status["restartCount"] == 1 and status["ready"] is True


def test_unready_condition_names_the_containers() -> None:
    snap = pod(cs(RUNNING), cs(RUNNING, ready=True, name="d"))
    body = build_status(snap, transition({}, owned_conditions(snap), T0))
    ready = next(c for c in body["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [c]"


def test_waiting_state_carries_reason_and_message() -> None:
    state = State("waiting", "ErrImagePull", 'Failed to pull image "x"')
    assert state.to_api() == {
        "waiting": {"reason": "ErrImagePull", "message": 'Failed to pull image "x"'}
    }
