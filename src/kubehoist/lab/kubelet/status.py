"""Pod status as the kubelet reports it, built from snapshots of the lab kubelet's own
state: phase, conditions, pod and host IPs, and a status per container with its
state, last state, restart count, container ID, readiness and start; and the
termination message of a container that ended. Pure.

The status is sent as a JSON merge patch of `pods/status`; lists are replaced whole,
so conditions this kubelet does not own (`PodScheduled` set by the scheduler,
`DisruptionTarget`, ...) are carried over from the pod as last seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")

MAX_CONTAINER_MESSAGE_BYTES = 4096
"""A termination message file is read up to this many bytes from its end."""
MAX_LOG_MESSAGE_BYTES = 2048
MAX_LOG_MESSAGE_LINES = 80
"""FallbackToLogsOnError: the message is the log's last lines, cut to the last bytes."""
MAX_POD_MESSAGE_BYTES = 12 * 1024
"""All termination messages of a pod together: each status keeps its first
MAX_POD_MESSAGE_BYTES / (containers + init containers) bytes."""


def timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class State:
    """One of a container's three states, as in `containerStatuses[].state`."""

    kind: str  # "waiting", "running" or "terminated"
    reason: str = ""
    message: str = ""
    exit_code: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    container_id: str = ""

    def to_api(self) -> dict[str, Any]:
        if self.kind == "waiting":
            body: dict[str, Any] = {}
            if self.reason:
                body["reason"] = self.reason
            if self.message:
                body["message"] = self.message
            return {"waiting": body}
        if self.kind == "running":
            return {"running": {"startedAt": timestamp(self.started_at or now())}}
        term: dict[str, Any] = {"exitCode": self.exit_code}
        if self.reason:
            term["reason"] = self.reason
        if self.message:
            term["message"] = self.message
        if self.started_at:
            term["startedAt"] = timestamp(self.started_at)
        if self.finished_at:
            term["finishedAt"] = timestamp(self.finished_at)
        if self.container_id:
            term["containerID"] = self.container_id
        return {"terminated": term}


WAITING_CREATING = State("waiting", "ContainerCreating")


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


# --- termination messages -------------------------------------------------------------


def falls_back_to_logs(policy: str, exit_code: int, reason: str) -> bool:
    """Whether an empty (or missing) message file is replaced by the log's tail: only
    for FallbackToLogsOnError and a failed container that did run (a container that
    could not start has no log of its own)."""
    return policy == "FallbackToLogsOnError" and exit_code != 0 and reason != "StartError"


def file_message(data: bytes | None, *, error: str = "", fallback: bool) -> tuple[str, bool]:
    """The message read from the file (`data`: its last MAX_CONTAINER_MESSAGE_BYTES,
    None if the file is missing; `error`: why it could not be read), and whether the
    log must be read instead."""
    if error:
        return error, False
    if data is None:
        return "", fallback
    return data[-MAX_CONTAINER_MESSAGE_BYTES:].decode(errors="replace"), fallback and not data


def log_message(tail: bytes) -> str:
    """The message made of a log whose end is `tail` (at least its last
    MAX_LOG_MESSAGE_BYTES + 1 bytes, or the whole log): its last MAX_LOG_MESSAGE_LINES
    lines, of which the last MAX_LOG_MESSAGE_BYTES bytes."""
    lines = tail.splitlines(keepends=True)[-MAX_LOG_MESSAGE_LINES:]
    return b"".join(lines)[-MAX_LOG_MESSAGE_BYTES:].decode(errors="replace")


def join_message(runtime_message: str, termination_message: str) -> str:
    """A terminated state's message: the runtime's own (a start error), then what the
    container left, separated by ": "."""
    if runtime_message and termination_message:
        return f"{runtime_message}: {termination_message}"
    return runtime_message or termination_message


def _cap_message(state: dict[str, Any], limit: int) -> None:
    term = state.get("terminated")
    if not term or "message" not in term:
        return
    raw = str(term["message"]).encode()
    if len(raw) > limit:
        term["message"] = raw[:limit].decode(errors="replace")


@dataclass(frozen=True)
class ContainerSnapshot:
    name: str
    image: str
    image_id: str
    container_id: str
    state: State
    last_state: State | None
    ready: bool
    started: bool
    restart_count: int

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state.to_api(),
            "lastState": self.last_state.to_api() if self.last_state else {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass(frozen=True)
class PodSnapshot:
    restart_policy: str
    pod_ip: str
    host_ip: str
    start_time: datetime
    sandbox_ready: bool
    init_containers: tuple[ContainerSnapshot, ...]
    containers: tuple[ContainerSnapshot, ...]
    message: str = ""
    reason: str = ""


def _stopped(c: ContainerSnapshot) -> bool:
    return c.state.kind == "terminated" or (
        c.state.kind == "waiting" and c.last_state is not None and c.last_state.kind == "terminated"
    )


def _exit_code(c: ContainerSnapshot) -> int:
    if c.state.kind == "terminated":
        return c.state.exit_code
    return c.last_state.exit_code if c.last_state else 0


def initialized(pod: PodSnapshot) -> bool:
    return all(c.state.kind == "terminated" and c.state.exit_code == 0 for c in pod.init_containers)


def phase(pod: PodSnapshot) -> str:
    """The pod phase by the kubelet's rules (getPhase)."""
    if pod.init_containers and not initialized(pod):
        failed_init = any(_stopped(c) and _exit_code(c) != 0 for c in pod.init_containers)
        if failed_init and pod.restart_policy == "Never":
            return "Failed"
        return "Pending"
    waiting = running = stopped = succeeded = failed = 0
    for c in pod.containers:
        if c.state.kind == "running":
            running += 1
        elif _stopped(c):
            stopped += 1
            if _exit_code(c) == 0:
                succeeded += 1
            else:
                failed += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if pod.restart_policy == "Always":
            return "Running"
        if pod.restart_policy == "OnFailure":
            return "Succeeded" if stopped == succeeded else "Running"
        return "Failed" if failed else "Succeeded"
    return "Pending"


def owned_conditions(pod: PodSnapshot) -> dict[str, bool]:
    containers_ready = bool(pod.containers) and all(c.ready for c in pod.containers)
    return {
        "PodReadyToStartContainers": pod.sandbox_ready,
        "Initialized": initialized(pod),
        "ContainersReady": containers_ready,
        "Ready": containers_ready,
    }


def transition(
    previous: Mapping[str, tuple[bool, datetime]], current: Mapping[str, bool], at: datetime
) -> dict[str, tuple[bool, datetime]]:
    """Conditions with their last transition time (kept while the status stays)."""
    out = {}
    for kind, value in current.items():
        old = previous.get(kind)
        out[kind] = old if old is not None and old[0] == value else (value, at)
    return out


def build_status(
    pod: PodSnapshot,
    conditions: Mapping[str, tuple[bool, datetime]],
    *,
    foreign_conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The `status` object to send (the body of a merge patch is {"status": this})."""
    conds: list[dict[str, Any]] = [
        dict(c) for c in foreign_conditions if c.get("type") not in OWNED_CONDITIONS
    ]
    for kind in OWNED_CONDITIONS:
        if kind in conditions:
            value, at = conditions[kind]
            cond: dict[str, Any] = {
                "type": kind,
                "status": "True" if value else "False",
                "lastProbeTime": None,
                "lastTransitionTime": timestamp(at),
            }
            if not value and kind in ("Ready", "ContainersReady"):
                unready = [c.name for c in pod.containers if not c.ready]
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{' '.join(unready)}]"
            if not value and kind == "Initialized":
                pending = [
                    c.name
                    for c in pod.init_containers
                    if not (c.state.kind == "terminated" and c.state.exit_code == 0)
                ]
                cond["reason"] = "ContainersNotInitialized"
                cond["message"] = f"containers with incomplete status: [{' '.join(pending)}]"
            conds.append(cond)
    status: dict[str, Any] = {
        "phase": phase(pod),
        "conditions": conds,
        "hostIP": pod.host_ip,
        "hostIPs": [{"ip": pod.host_ip}],
        "startTime": timestamp(pod.start_time),
        "containerStatuses": [c.to_api() for c in pod.containers],
    }
    if pod.init_containers:
        status["initContainerStatuses"] = [c.to_api() for c in pod.init_containers]
    limit = MAX_POD_MESSAGE_BYTES // max(1, len(pod.containers) + len(pod.init_containers))
    for c in (*status["containerStatuses"], *status.get("initContainerStatuses", ())):
        _cap_message(c["state"], limit)
        _cap_message(c["lastState"], limit)
    if pod.pod_ip:
        status["podIP"] = pod.pod_ip
        status["podIPs"] = [{"ip": pod.pod_ip}]
    if pod.message:
        status["message"] = pod.message
    if pod.reason:
        status["reason"] = pod.reason
    return status
