"""The instances of a component in a lab's log archives. Every container instance
(the static pods `<component>-<node>` and the pods of a Deployment, each start
separately) has its log and a state file in its node's log archive, kept by
`kubehoist.lab.logkeeper` (the lab's log shipper) after the kubelet has deleted the
pod's own logs:

    <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.log
    <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.state.json

`find_instances` reads them as `Instance`s, oldest first; `end_if_gone` ends one whose
container is gone without a recorded end at its last log line. `iso` is how the
reports print a time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from kubehoist.lab.logarchive import ARCHIVE_DIR, ARCHIVE_LOG, last_line_time, state_path

DEFAULT_COMPONENT: Final = "kube-controller-manager"


class LeadersError(Exception):
    """A lab root or a state file that cannot be read."""


@dataclass(frozen=True)
class Instance:
    """One start of a component's container, from its state file and its log's path."""

    log: Path  # in the archive
    node: str
    namespace: str
    pod: str
    pod_uid: str
    container: str
    restart_count: int
    container_id: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    finished_at_estimated: bool = False
    exit_code: int | None = None
    reason: str = ""
    live_log: Path | None = None  # the kubelet's log of it, seen from the host
    has_state: bool = False

    @property
    def name(self) -> str:
        """pod/node/restartCount; pod/node/restartCount.<id12> for a later container
        archived beside an earlier one of the same pod UID and restart count."""
        m = ARCHIVE_LOG.fullmatch(self.log.name)
        later = f".{m['id']}" if m is not None and m["id"] else ""
        return f"{self.pod}/{self.node}/{self.restart_count}{later}"

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def container_gone(self) -> bool:
        """The kubelet removed the container: its log (rotated ones too) is deleted."""
        live = self.live_log
        if live is None:
            return False
        if live.exists():
            return False
        try:
            return not any(live.parent.glob(f"{live.name}.*"))
        except OSError:
            return True

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.name,
            "node": self.node,
            "namespace": self.namespace,
            "pod": self.pod,
            "podUID": self.pod_uid,
            "container": self.container,
            "restartCount": self.restart_count,
            "containerID": self.container_id or None,
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            "finishedAtEstimated": self.finished_at_estimated,
            "exitCode": self.exit_code,
            "reason": self.reason or None,
            "log": str(self.log),
            "stateFile": self.has_state,
        }


def iso(t: datetime | None) -> str | None:
    """A time as the reports print it: UTC, microseconds, `Z` (None stays None)."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, where: Path) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise LeadersError(f"{where}: bad timestamp {value!r}") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def instance_from_files(
    log: Path, state: dict[str, Any] | None, node: str, *, node_root: Path | None = None
) -> Instance:
    """An instance from its archived log's path (…/<ns>_<pod>_<uid>/<container>/<n>.log
    or <n>.<id12>.log) and its state file's document (None if it has none);
    `node_root` places the state's `logPath` (inside the node) on the host."""
    pod_dir = log.parent.parent.name
    namespace, _, rest = pod_dir.partition("_")
    pod, _, uid = rest.rpartition("_")
    m = ARCHIVE_LOG.fullmatch(log.name)
    base = Instance(
        log=log,
        node=node,
        namespace=namespace,
        pod=pod,
        pod_uid=uid,
        container=log.parent.name,
        restart_count=int(m["restart"]) if m else 0,
    )
    if state is None:
        return base
    where = state_path(log)
    exit_code = state.get("exitCode")
    live = state.get("logPath")
    return Instance(
        log=log,
        node=str(state.get("node") or node),
        namespace=str(state.get("namespace") or namespace),
        pod=str(state.get("pod") or pod),
        pod_uid=str(state.get("podUID") or uid),
        container=str(state.get("container") or base.container),
        restart_count=int(state.get("restartCount", base.restart_count)),
        container_id=str(state.get("containerID") or ""),
        started_at=parse_time(state.get("startedAt"), where),
        finished_at=parse_time(state.get("finishedAt"), where),
        finished_at_estimated=bool(state.get("finishedAtEstimated")),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=str(state.get("reason") or ""),
        live_log=(node_root / live.lstrip("/"))
        if node_root is not None and isinstance(live, str) and live
        else None,
        has_state=True,
    )


def _is_component_container(pod_dir: Path, container_dir: Path, component: str) -> bool:
    """The component's container: named after it (kubeadm's static pods, kubehoist's
    and the article's Deployments), or the only container of a pod named after it."""
    if container_dir.name == component:
        return True
    pod = pod_dir.name.partition("_")[2].rpartition("_")[0]
    if not pod.startswith(f"{component}-"):
        return False
    return sum(1 for d in pod_dir.iterdir() if d.is_dir()) == 1


def find_instances(root: Path, component: str = DEFAULT_COMPONENT) -> list[Instance]:
    """Every container instance of `component` in the lab's log archives, oldest
    first."""
    nodes_dir = root / "nodes"
    if not nodes_dir.is_dir():
        raise LeadersError(f"{root}: not a lab root (no nodes/ directory)")
    found: list[Instance] = []
    for node_dir in sorted(p for p in nodes_dir.iterdir() if p.is_dir()):
        archive = node_dir / ARCHIVE_DIR
        for pod_dir in sorted(p for p in archive.glob("*") if p.is_dir()):
            containers = sorted(p for p in pod_dir.iterdir() if p.is_dir())
            for container_dir in containers:
                if not _is_component_container(pod_dir, container_dir, component):
                    continue
                for log in sorted(container_dir.glob("*.log")):
                    if ARCHIVE_LOG.fullmatch(log.name):
                        state = _read_state(log)
                        found.append(
                            instance_from_files(log, state, node_dir.name, node_root=node_dir)
                        )
    found.sort(key=lambda i: (i.started_at or datetime.max.replace(tzinfo=UTC), i.name))
    return found


def _read_state(log: Path) -> dict[str, Any] | None:
    path = state_path(log)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LeadersError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(doc, dict):
        raise LeadersError(f"{path}: not a JSON object")
    return doc


def end_if_gone(instance: Instance) -> Instance | None:
    """An instance without a recorded end whose container is gone, ended at its last
    log line (else its start), reason "Unknown", estimated; None if that is not so."""
    if not (instance.has_state and instance.running and instance.container_gone):
        return None
    end = last_line_time(instance.log) or instance.started_at
    if end is None:
        return None
    return dataclasses.replace(
        instance,
        finished_at=end,
        finished_at_estimated=True,
        exit_code=None,
        reason=instance.reason or "Unknown",
    )
