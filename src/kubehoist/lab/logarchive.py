"""The log keeper's archive and what it is written from: the archive's layout and file
names, the CRI log lines in it (`parse_cri_line`, `parse_rfc3339`), its state files
(`state_path`, `read_state`, `finish_unknown`), and crictl's JSON output (`parse_ps`,
`parse_inspect`) as the container records (`ContainerRecord`) a state file is written
from (`state_document`).

`kubehoist.lab.logkeeper` writes the archive; `kubehoist.lab.instances`,
`kubehoist.lab.leaderlogs` and `kubehoist.lab.oracle` read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from kubehoist.errors import KubehoistError

ARCHIVE_DIR: Final = Path("var/log/pods-archive")
"""The archive under a node's root (the node's own /var/log/pods-archive)."""
STATE_SUFFIX: Final = ".state.json"
ARCHIVE_LOG: Final = re.compile(r"(?P<restart>\d+)(?:\.(?P<id>[0-9a-f]{12}))?\.log")
"""An archived log's file name: `<restartCount>.log`, or `<restartCount>.<id12>.log`
for a later container of the same pod UID, container name and restart count."""
STATE_FIELDS: Final = (
    "containerID",
    "startedAt",
    "finishedAt",
    "finishedAtEstimated",
    "exitCode",
    "reason",
    "node",
    "namespace",
    "pod",
    "podUID",
    "container",
    "restartCount",
    "logPath",
)
"""A state file's keys. `logPath` is the live log's path inside the node."""

RUNNING: Final = "CONTAINER_RUNNING"
EXITED: Final = "CONTAINER_EXITED"
CREATED: Final = "CONTAINER_CREATED"
UNKNOWN: Final = "CONTAINER_UNKNOWN"

_LABEL_POD: Final = "io.kubernetes.pod.name"
_LABEL_NAMESPACE: Final = "io.kubernetes.pod.namespace"
_LABEL_UID: Final = "io.kubernetes.pod.uid"
_LABEL_CONTAINER: Final = "io.kubernetes.container.name"
_ANNOTATION_RESTARTS: Final = "io.kubernetes.container.restartCount"

_TAIL: Final = 64 << 10  # how much of an archive's end is read for its last line


# --- the archive's format (pure) ----------------------------------------------------------

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d\d-\d\d)T(?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d\d:\d\d)"
)


def parse_rfc3339(text: str) -> datetime:
    """Go's RFC3339Nano (`2026-12-01T17:37:09.123456789Z`, any zone, 0-9 fraction
    digits) as an aware UTC datetime (to the microsecond); ValueError if it is not."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    micro = (m["frac"] or "").ljust(6, "0")[:6]
    zone = "+00:00" if m["zone"] == "Z" else m["zone"]
    t = datetime.fromisoformat(f"{m['date']}T{m['time']}.{micro}{zone}")
    return t.astimezone(UTC)


def format_time(t: datetime) -> str:
    """A state file's timestamps: UTC, microseconds, `Z`."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CriLine:
    """One line of a CRI log: `<RFC3339Nano> <stdout|stderr> <P|F> <content>`."""

    time: datetime
    stream: str
    partial: bool  # tag P: the content continues on the stream's next line
    content: str


def parse_cri_line(line: str) -> CriLine | None:
    """A CRI log line (with or without its newline), or None if it is not one."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("stdout", "stderr"):
        return None
    tags = parts[2].split(":")
    if not set(tags) <= {"P", "F"}:
        return None
    try:
        when = parse_rfc3339(parts[0])
    except ValueError:
        return None
    return CriLine(
        time=when,
        stream=parts[1],
        partial="P" in tags,
        content=parts[3] if len(parts) == 4 else "",
    )


def last_line_time(path: Path) -> datetime | None:
    """The time of the last CRI line of a log file (None: no such line, no file)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except FileNotFoundError:
        return None
    for raw in reversed(tail.splitlines()):
        parsed = parse_cri_line(raw.decode("utf-8", errors="replace"))
        if parsed is not None:
            return parsed.time
    return None


def state_path(archive_log: Path) -> Path:
    """`<n>.state.json` beside `<n>.log`."""
    return archive_log.with_name(archive_log.name.removesuffix(".log") + STATE_SUFFIX)


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write `doc` to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's document; None if it is missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --- crictl's output (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class ContainerRecord:
    """What `crictl inspect` says about one container of the kubelet's."""

    container_id: str
    state: str  # CONTAINER_CREATED, _RUNNING, _EXITED, _UNKNOWN
    namespace: str
    pod: str
    pod_uid: str
    container: str
    restart_count: int
    log_path: str  # inside the node; "" if the container has no log
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    reason: str

    @property
    def pod_dir(self) -> str:
        """`<namespace>_<pod>_<uid>`, as the kubelet names the pod's log directory."""
        return f"{self.namespace}_{self.pod}_{self.pod_uid}"


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise KubehoistError(f"crictl {what}: output is not JSON: {exc}") from exc


def parse_ps(text: str) -> dict[str, str]:
    """`crictl ps -a -o json` as {container ID: state}."""
    doc = _json(text, "ps")
    containers = doc.get("containers") if isinstance(doc, dict) else None
    if not isinstance(containers, list):
        raise KubehoistError("crictl ps: no `containers` list in its output")
    out: dict[str, str] = {}
    for c in containers:
        if isinstance(c, dict) and isinstance(c.get("id"), str):
            out[c["id"]] = str(c.get("state", UNKNOWN))
    return out


def _cri_time(value: Any) -> datetime | None:
    """crictl inspect's times: RFC3339Nano in crictl's zone; Go's zero time
    (`0001-01-01T00:00:00Z`) or the Unix epoch mean "not set"."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = parse_rfc3339(value)
    except ValueError:
        return None
    return None if t.timestamp() <= 0 else t


def record_from_status(status: Mapping[str, Any]) -> ContainerRecord | None:
    """The record of one `status` object of `crictl inspect`; None for a container
    the kubelet did not create (no pod labels)."""
    labels = status.get("labels") or {}
    annotations = status.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return None
    names = [labels.get(k) for k in (_LABEL_NAMESPACE, _LABEL_POD, _LABEL_UID, _LABEL_CONTAINER)]
    if not all(isinstance(n, str) and n for n in names):
        return None
    namespace, pod, uid, container = (str(n) for n in names)
    metadata = status.get("metadata") or {}
    try:
        restarts = int(annotations.get(_ANNOTATION_RESTARTS, metadata.get("attempt", 0)))
    except (TypeError, ValueError):
        restarts = 0
    state = str(status.get("state", UNKNOWN))
    finished = _cri_time(status.get("finishedAt"))
    exit_code = status.get("exitCode")
    return ContainerRecord(
        container_id=str(status.get("id", "")),
        state=state,
        namespace=namespace,
        pod=pod,
        pod_uid=uid,
        container=container,
        restart_count=restarts,
        log_path=str(status.get("logPath") or ""),
        started_at=_cri_time(status.get("startedAt")) if state != CREATED else None,
        finished_at=finished,
        exit_code=int(exit_code) if finished is not None and isinstance(exit_code, int) else None,
        reason=str(status.get("reason") or "") if finished is not None else "",
    )


def parse_inspect(text: str) -> dict[str, ContainerRecord | None]:
    """`crictl inspect -o json ID...` (one object for one ID, a list for several) as
    {container ID: record, or None if the kubelet did not create it}."""
    doc = _json(text, "inspect")
    items = doc if isinstance(doc, list) else [doc]
    out: dict[str, ContainerRecord | None] = {}
    for item in items:
        status = item.get("status") if isinstance(item, dict) else None
        if not isinstance(status, dict) or not isinstance(status.get("id"), str):
            raise KubehoistError("crictl inspect: an item without `status.id`")
        out[status["id"]] = record_from_status(status)
    return out


def state_document(record: ContainerRecord, node: str) -> dict[str, Any]:
    """The state file of a container as crictl last described it."""
    return {
        "containerID": record.container_id,
        "startedAt": format_time(record.started_at) if record.started_at else None,
        "finishedAt": format_time(record.finished_at) if record.finished_at else None,
        "finishedAtEstimated": False,
        "exitCode": record.exit_code,
        "reason": record.reason or None,
        "node": node,
        "namespace": record.namespace,
        "pod": record.pod,
        "podUID": record.pod_uid,
        "container": record.container,
        "restartCount": record.restart_count,
        "logPath": record.log_path or None,
    }


def finish_unknown(archive_log: Path) -> bool:
    """Close the state file of a container that disappeared while it was still open:
    reason "Unknown", no exit code, ended at its last log line (else its start),
    `finishedAtEstimated`. False if there was nothing to close."""
    path = state_path(archive_log)
    doc = read_state(path)
    if doc is None or doc.get("finishedAt") is not None:
        return False
    end = last_line_time(archive_log)
    doc.update(
        finishedAt=format_time(end) if end is not None else doc.get("startedAt"),
        finishedAtEstimated=True,
        exitCode=None,
        reason="Unknown",
    )
    write_json_atomic(path, doc)
    return True
