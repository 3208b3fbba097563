"""The lab's log shipper: keeps every container's log and lifetime after the kubelet
has forgotten them.

On a real cluster fluent-bit or promtail does this; in the lab one `LogKeeper` per
node does. The real kubelet deletes a pod's logs (`/var/log/pods/...`) when it removes
the pod's containers and records no history of container starts, yet
`kubehoist lab leaders` must judge every instance that ever ran, including those of
pods that are gone. So, about once a second, the keeper:

- lists the node's containers through CRI (`crictl ps -a -o json`, inside the node),
  and inspects (`crictl inspect -q -o json`) only those that are new or whose state
  changed;
- appends the new bytes of each container's log (CRI format, as containerd wrote
  them) to its archive, following a rotated or replaced file and reading a deleted
  one to its end through the descriptor it holds:

      <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.log

- writes beside it, atomically, `<restartCount>.state.json` (`STATE_FIELDS`): the
  container's ID, its start, its end (`finishedAt` null while running), exit code and
  reason, and who it was. A container that disappears before its end was seen is
  finished with reason "Unknown", `finishedAtEstimated: true` and its last log line's
  time (its start if it logged nothing).

One archive file belongs to one container: a static pod whose manifest comes back
has the same UID and restarts at count 0, so a second container for a taken
`<n>.log` is archived as `<n>.<id12>.log` (`ARCHIVE_LOG`). What the keeper has copied
is checkpointed in `pods-archive/.logkeeper.json`, so a restarted keeper resumes
instead of copying again.

The CRI calls go through one injectable function (`Crictl`), so the bookkeeping is
tested with recorded crictl output. This module also owns the archive's format
(`parse_cri_line`, `parse_rfc3339`), which `kubehoist.lab.leaders` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from kubehoist.errors import KubehoistError
from kubehoist.lab.node import CONTAINERD_SOCKET, enter_argv
from kubehoist.lab.spec import LabNode, LabSpec

log = logging.getLogger("kubehoist.lab.logkeeper")

ARCHIVE_DIR: Final = Path("var/log/pods-archive")
"""The archive under a node's root (the node's own /var/log/pods-archive)."""
STATE_SUFFIX: Final = ".state.json"
CHECKPOINT_NAME: Final = ".logkeeper.json"
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
CRI_ENDPOINT: Final = f"unix://{CONTAINERD_SOCKET}"
DEFAULT_INTERVAL_S: Final = 1.0

RUNNING: Final = "CONTAINER_RUNNING"
EXITED: Final = "CONTAINER_EXITED"
CREATED: Final = "CONTAINER_CREATED"
UNKNOWN: Final = "CONTAINER_UNKNOWN"

_LABEL_POD: Final = "io.kubernetes.pod.name"
_LABEL_NAMESPACE: Final = "io.kubernetes.pod.namespace"
_LABEL_UID: Final = "io.kubernetes.pod.uid"
_LABEL_CONTAINER: Final = "io.kubernetes.container.name"
_ANNOTATION_RESTARTS: Final = "io.kubernetes.container.restartCount"

_CHUNK: Final = 1 << 20
_TAIL: Final = 64 << 10  # how much of an archive's end is read for its last line

Crictl = Callable[[Sequence[str]], str]
"""Runs `crictl <args>` against the node's containerd and returns its stdout; raises
KubehoistError if crictl fails."""


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


# --- crictl in a node -------------------------------------------------------------------------


def node_crictl(spec: LabSpec, node: LabNode, crictl: Path, *, timeout: float = 10.0) -> Crictl:
    """A `Crictl` that runs the binary inside the node's namespaces (`enter_argv`)."""

    def run(args: Sequence[str]) -> str:
        try:
            prefix = enter_argv(spec, node)
        except OSError as exc:
            raise KubehoistError(f"node {node.name} is not running: {exc}") from exc
        argv = [*prefix, str(crictl), "--runtime-endpoint", CRI_ENDPOINT, *args]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KubehoistError(
                f"crictl {args[0]} on {node.name}: no answer in {timeout:g}s"
            ) from exc
        except OSError as exc:
            raise KubehoistError(f"crictl {args[0]} on {node.name}: {exc}") from exc
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
            raise KubehoistError(f"crictl {args[0]} on {node.name}: {lines[-1]}")
        return proc.stdout

    return run


# --- the keeper ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """What one pass did."""

    listed: int  # containers crictl ps listed
    inspected: int  # containers inspected (new or changed state)
    copied: int  # log bytes appended to the archive
    states: int  # state files written
    gone: int  # containers that left CRI since the last pass


class _Tracked:
    """A container the keeper follows: where its log goes and how far it got."""

    def __init__(self, cid: str, archive: Path, source: Path | None) -> None:
        self.cid = cid
        self.archive = archive
        self.source = source  # the live log on the host; None: the container has none
        self.fh: IO[bytes] | None = None
        self.inode: int | None = None
        self.offset = 0
        self.ps_state = ""  # "" until inspected by this keeper
        self.record: ContainerRecord | None = None
        self.written: dict[str, Any] | None = None
        self.ended_sweeps = 0  # passes since its end was seen (its log is then complete)
        self.drained = False

    def checkpoint(self, archive_root: Path) -> dict[str, Any]:
        return {
            "archive": str(self.archive.relative_to(archive_root)),
            "source": str(self.source) if self.source else None,
            "inode": self.inode,
            "offset": self.offset,
            "drained": self.drained,
        }

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class LogKeeper:
    """Archives the logs and lifetimes of one node's containers (see the module)."""

    def __init__(self, node: str, node_root: Path, crictl: Crictl) -> None:
        self.node = node
        self.node_root = node_root
        self.archive_root = node_root / ARCHIVE_DIR
        self._crictl = crictl
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._ignored: dict[str, str] = {}  # not the kubelet's: ID -> state when inspected
        self._saved: dict[str, Any] | None = None
        self._load_checkpoint()

    @classmethod
    def for_node(cls, spec: LabSpec, node: LabNode, crictl: Path) -> LogKeeper:
        """The keeper of a lab node, running `crictl` (the binary) inside it."""
        return cls(node.name, node.root(spec.root), node_crictl(spec, node, crictl))

    # --- the loop ---------------------------------------------------------------------------
    async def run(
        self, stop: asyncio.Event | None = None, interval: float = DEFAULT_INTERVAL_S
    ) -> None:
        """Sweep every `interval` seconds (in a worker thread) until `stop` is set or
        the task is cancelled. A failing pass (containerd not up yet) is logged when
        its message changes and retried; the descriptors stay open for the final
        `sweep_once(final=True)`."""
        last_error = ""
        while stop is None or not stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.sweep_once)
                if last_error:
                    log.info("log keeper %s: sweeping again", self.node)
                last_error = ""
            except (KubehoistError, OSError) as exc:
                if str(exc) != last_error:
                    log.warning("log keeper %s: %s", self.node, exc)
                last_error = str(exc)
            pause = max(0.05, interval - (time.monotonic() - started))
            if stop is None:
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)

    def sweep_once(self, *, final: bool = False) -> Sweep:
        """One pass: list, inspect what changed, copy new log bytes, write states,
        finish containers that left CRI. `final` (the node is going away) also drains
        and closes every log and finishes every state still open as "Unknown"; if
        crictl fails then, every container counts as gone."""
        with self._lock:
            try:
                listed = parse_ps(self._crictl(["ps", "-a", "-o", "json"]))
            except KubehoistError:
                if not final:
                    raise
                listed = {}  # containerd is gone already: so are its containers
            changed = [
                cid
                for cid, state in listed.items()
                if state != CREATED
                and self._ignored.get(cid) != state
                and (cid not in self._tracked or self._tracked[cid].ps_state != state)
            ]
            records = self._inspect(changed)
            copied = states = 0
            for cid in changed:
                if cid not in records:
                    continue  # gone between ps and inspect
                record = records[cid]
                if record is None:
                    self._ignored[cid] = listed[cid]
                    continue
                if cid not in self._tracked:
                    states += self._adopt(record)
                tracked = self._tracked[cid]
                tracked.record, tracked.ps_state = record, listed[cid]
            for tracked in self._tracked.values():
                copied += self._drain(tracked)
                states += self._write_state(tracked)
            gone = [cid for cid in self._tracked if cid not in listed]
            for cid in gone if not final else list(self._tracked):
                tracked = self._tracked.pop(cid)
                copied += self._drain(tracked)
                tracked.close()
                states += finish_unknown(tracked.archive)
            self._ignored = {k: v for k, v in self._ignored.items() if k in listed}
            self._save_checkpoint()
            return Sweep(
                listed=len(listed),
                inspected=len(changed),
                copied=copied,
                states=states,
                gone=len(gone),
            )

    def close(self) -> None:
        """Close the held logs and save the checkpoint (states stay as they are: the
        containers may outlive this keeper, and the next one resumes them)."""
        with self._lock:
            for tracked in self._tracked.values():
                tracked.close()
            self._save_checkpoint()

    # --- inspecting ------------------------------------------------------------------------
    def _inspect(self, ids: Sequence[str]) -> dict[str, ContainerRecord | None]:
        """One crictl call for all; one each if that fails (one of them is gone)."""
        if not ids:
            return {}
        try:
            return parse_inspect(self._crictl(["inspect", "-q", "-o", "json", *ids]))
        except KubehoistError:
            if len(ids) == 1:
                return {}
        out: dict[str, ContainerRecord | None] = {}
        for cid in ids:
            with contextlib.suppress(KubehoistError):
                out.update(parse_inspect(self._crictl(["inspect", "-q", "-o", "json", cid])))
        return out

    def _adopt(self, record: ContainerRecord) -> int:
        """Start following a container: pick its archive file (its own, if an earlier
        keeper started one) and write its first state; 1 if it wrote it."""
        base = self.archive_root / record.pod_dir / record.container
        plain = base / f"{record.restart_count}.log"
        own = base / f"{record.restart_count}.{record.container_id[:12]}.log"
        source = self.node_root / record.log_path.lstrip("/") if record.log_path else None
        for candidate in (plain, own):
            doc = read_state(state_path(candidate))
            if doc is not None and doc.get("containerID") == record.container_id:
                tracked = _Tracked(record.container_id, candidate, source)
                # No checkpoint of it: assume its live log was not rotated meanwhile.
                with contextlib.suppress(OSError):
                    copied = candidate.stat().st_size
                    if source is not None and source.stat().st_size >= copied:
                        tracked.offset = copied
                        tracked.inode = source.stat().st_ino
                break
        else:
            taken = plain.exists() or state_path(plain).exists()
            tracked = _Tracked(record.container_id, own if taken else plain, source)
        tracked.archive.parent.mkdir(parents=True, exist_ok=True)
        tracked.archive.touch()
        self._tracked[record.container_id] = tracked
        tracked.record = record
        return self._write_state(tracked)

    def _write_state(self, tracked: _Tracked) -> int:
        if tracked.record is None or tracked.record.started_at is None:
            return 0
        doc = state_document(tracked.record, self.node)
        if doc == tracked.written:
            return 0
        write_json_atomic(state_path(tracked.archive), doc)
        tracked.written = doc
        return 1

    # --- copying -------------------------------------------------------------------------
    def _drain(self, tracked: _Tracked) -> int:
        """Append what the live log gained since the last pass; follow a rotation."""
        if tracked.drained:
            return 0
        copied = 0
        if tracked.source is not None and (tracked.fh is not None or self._open(tracked)):
            try:
                current: os.stat_result | None = tracked.source.stat()
            except FileNotFoundError:
                current = None  # deleted: what the descriptor holds is all there is
            copied += self._copy(tracked)
            if current is not None and current.st_ino != tracked.inode:
                # Rotated or replaced: the old file, drained above, gets no more bytes
                # once the new one exists (containerd reopens the path).
                tracked.close()
                tracked.inode, tracked.offset = None, 0
                if self._open(tracked):
                    copied += self._copy(tracked)
            elif current is not None and current.st_size < tracked.offset:
                assert tracked.fh is not None  # truncated in place: copy it anew
                tracked.fh.seek(0)
                tracked.offset = 0
                copied += self._copy(tracked)
        record = tracked.record
        if record is not None and record.finished_at is not None:
            tracked.ended_sweeps += 1
            if tracked.ended_sweeps >= 2:  # its writer has flushed: done with it
                tracked.close()
                tracked.drained = True
        return copied

    @staticmethod
    def _open(tracked: _Tracked) -> bool:
        assert tracked.source is not None
        try:
            fh = open(tracked.source, "rb")  # noqa: SIM115 -- held across passes
        except FileNotFoundError:
            return False
        inode = os.fstat(fh.fileno()).st_ino
        if tracked.inode is not None and inode != tracked.inode:
            tracked.offset = 0  # a checkpointed offset of another file
        tracked.inode = inode
        fh.seek(tracked.offset)
        tracked.fh = fh
        return True

    @staticmethod
    def _copy(tracked: _Tracked) -> int:
        """Append the descriptor's unread bytes to the archive (opened only then)."""
        assert tracked.fh is not None
        chunk = tracked.fh.read(_CHUNK)
        if not chunk:
            return 0
        copied = 0
        with open(tracked.archive, "ab") as out:
            while chunk:
                out.write(chunk)
                copied += len(chunk)
                chunk = tracked.fh.read(_CHUNK)
        tracked.offset += copied
        return copied

    # --- checkpoint --------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.archive_root / CHECKPOINT_NAME

    def _load_checkpoint(self) -> None:
        doc = read_state(self.checkpoint_path) or {}
        containers = doc.get("containers")
        if not isinstance(containers, dict):
            return
        for cid, entry in containers.items():
            try:
                archive = self.archive_root / str(entry["archive"])
                source = Path(entry["source"]) if entry.get("source") else None
                tracked = _Tracked(cid, archive, source)
                tracked.inode = int(entry["inode"]) if entry.get("inode") is not None else None
                tracked.offset = int(entry.get("offset", 0))
                tracked.drained = bool(entry.get("drained"))
            except (KeyError, TypeError, ValueError):
                continue
            self._tracked[cid] = tracked
        self._saved = doc

    def _save_checkpoint(self) -> None:
        doc = {
            "node": self.node,
            "containers": {
                cid: t.checkpoint(self.archive_root) for cid, t in sorted(self._tracked.items())
            },
        }
        if doc == self._saved:
            return
        self.archive_root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.checkpoint_path, doc)
        self._saved = doc
