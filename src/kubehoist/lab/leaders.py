"""Never two leaders, strictly: who led, and when, as the components' own logs and the
container runtime tell it.

Every container instance of a component in a lab (the static pods
`<component>-<node>` and the pods of a Deployment, each start separately) has its log
and a state file in its node's log archive, kept by `kubehoist.lab.logkeeper` (the
lab's log shipper) after the kubelet has deleted the pod's own logs:

    <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.log
    <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.state.json

The logs are in the CRI format (`<RFC3339Nano> <stream> <P|F> <line>`): each line's
time is containerd's, in UTC; partial (`P`) lines are joined. From client-go's leader
election lines (klog text after the CRI prefix) each instance's *lead intervals* are
built. One starts at `"Successfully acquired lease"` for the component's Lease and
lasts until the process's **last sign of acting as leader**, not until it stops
believing it leads: a controller manager that logged "Failed to renew lease" still
runs its controllers until it exits. So an interval ends at

- the instance's exit as the container runtime recorded it (the state file's
  `finishedAt`, containerd's task exit; a later log line, within the measurement
  error, extends it);
- for a container gone without a recorded end: its last log line (estimated, with a
  warning: the process may have lived on silently);
- for an instance still running that logged its loss (`"Failed to renew lease"`,
  `leaderelection lost`, a `stopped leading` event): its last log line;
- for an instance still running that did not: now;
- for an instance that acquired again: its last line before that acquisition.

Two intervals of different instances that overlap by more than `DEFAULT_TOLERANCE_S`
— the measurement error, nothing more (see there) — are two leaders at once, with
one exception that client-go itself allows and that is shown as its own kind
(`FROZEN`), never counted as two leaders: a leader frozen (SIGSTOP, a paused VM) past
its lease, whose Lease another instance took meanwhile, that wakes up and acts until
its renew deadline runs out. A freeze is known from the lab's freeze journal
(`FREEZES`, written by whoever sent SIGSTOP and SIGCONT: `bench/chaos.py`); a frozen
overlap is one where the earlier leader's container was frozen before the other
acquired, and it ended no later than its resume + the renew deadline + one second for
its exit (`FROZEN_EXIT_S`) + the tolerance. Anything beyond is two leaders.

`analyze(root)` does it all and returns a `LeaderReport`; `read_cri_log`,
`parse_events`, `lead_intervals` and `find_overlaps` are the pure steps. The guard's
actions are judged against these intervals by `kubehoist.lab.oracle`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from kubehoist.components import COMPONENTS
from kubehoist.lab.logkeeper import (
    ARCHIVE_DIR,
    ARCHIVE_LOG,
    last_line_time,
    parse_cri_line,
    state_path,
)

DEFAULT_COMPONENT: Final = "kube-controller-manager"
TOLERANCE_MS: Final = 100
"""The measurement error of an overlap, in milliseconds. What it is made of:

- clocks: every lab node is a set of namespaces on one kernel (no time namespace), so
  containerd, its shims and every process of every node read one CLOCK_REALTIME —
  no skew between nodes: 0 ms;
- resolution: CRI log lines carry nanoseconds, state files microseconds: 0.001 ms;
- stamping: a log line is stamped when containerd reads it from the container's pipe,
  an exit when the runc shim reaps the process — both *after* the fact. A late end
  stamp is what can make an overlap appear that was not there (a late acquisition
  stamp only hides one). Measured on the lab (klog's own microsecond stamp against
  containerd's, same clock) while containerd keeps up: median 0.6 ms, p99 17 ms, max
  39 ms over 679 lines; rounded up: 100 ms. On a CPU-starved machine it is larger (the
  chaos run of 2026-12-02, load average 60-150 on 2 cores: p99 0.53 s, max 2.7 s over
  5,094 lines, SIGKILL to `finishedAt` 0.45 s), so `bench/chaos.py` measures its own
  run and judges with the larger of the two;
- polling: the log keeper polls CRI every second, but its poll times never become
  timestamps (it copies containerd's); the oracle is run after two sweeps so the last
  lines and ends are in: 0 ms.

An overlap longer than this is not an artefact of measurement on a machine where
containerd keeps up; pass the measured error as `tolerance` where it does not."""
DEFAULT_TOLERANCE_S: Final = TOLERANCE_MS / 1000
RENEW_DEADLINE_S: Final = 10.0
"""client-go's renew deadline as the components run it (their default; kubeadm and
`kubehoist render` keep it): how long a woken frozen leader may keep trying to renew,
and so keep acting, before it gives up and exits."""
FROZEN_EXIT_S: Final = 1.0
"""What a woken frozen leader may still take after its renew deadline ran out: client-go
logs "Failed to renew lease", the component's OnStoppedLeading flushes klog and exits,
and the runtime reaps it. Part of client-go's allowance, not of the measurement error."""
FREEZES: Final = Path("faults/freezes.jsonl")
"""The lab's freeze journal under its root: one JSON object a line, `containerID`,
`node`, `pod`, `stopped` (RFC 3339, UTC) and `resumed` (null until it is); the last
line for a (containerID, stopped) pair wins."""

ACQUIRED: Final = "acquired"
RENEW_FAILED: Final = "failed to renew lease"
LOST: Final = "leaderelection lost"
STOPPED: Final = "stopped leading"
BECAME: Final = "became leader"
"""client-go's LeaderElection event `<identity> became leader`: the instance's
identity on the Lease (how a guard's Reap names its holder)."""

TWO_LEADERS: Final = "two-leaders"
FROZEN: Final = "frozen-leader"
"""The kinds of overlap: two leaders at once, and client-go's own allowance for a
frozen leader that wakes up (see the module)."""

_KLOG = re.compile(
    r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6}\s+"
    r"(?P<thread>\d+) (?P<source>[^\]\s]+)\] (?P<message>.*)$"
)
_INTERESTING = re.compile(
    r"acquired lease|renew lease|leaderelection lost|stopped leading|became leader",
    re.IGNORECASE,
)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_KV = re.compile(rf"([A-Za-z_][\w.-]*)=({_QUOTED}|\S+)")
_LOCK_AFTER = re.compile(r"lease\s+([^\s:\"]+)", re.IGNORECASE)


class LeadersError(Exception):
    """A lab root or a state file that cannot be read."""


# --- log lines -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line a container wrote, at the time containerd read it (UTC)."""

    time: datetime
    stream: str
    text: str
    number: int  # the archive's line number of its first fragment


def read_cri_log(lines: Iterable[str]) -> Iterator[LogLine]:
    """The lines of a CRI-format log, each stream's partial (`P`) fragments joined
    into one line stamped with its first fragment's time; lines that are not CRI
    lines are skipped, and a line still partial at the end comes out as it is."""
    pending: dict[str, tuple[datetime, int, list[str]]] = {}
    for number, raw in enumerate(lines, 1):
        parsed = parse_cri_line(raw)
        if parsed is None:
            continue
        start, first, parts = pending.pop(parsed.stream, (parsed.time, number, []))
        parts.append(parsed.content)
        if parsed.partial:
            pending[parsed.stream] = (start, first, parts)
            continue
        yield LogLine(time=start, stream=parsed.stream, text="".join(parts), number=first)
    for stream, (start, first, parts) in sorted(pending.items(), key=lambda kv: kv[1][1]):
        yield LogLine(time=start, stream=stream, text="".join(parts), number=first)


@dataclass(frozen=True)
class KlogLine:
    """One klog text-format line: its severity, source and the message after `] `
    (its own time stamp, local and without a year, is not needed: the CRI time is)."""

    severity: str
    source: str
    message: str


def parse_klog(line: str) -> KlogLine | None:
    m = _KLOG.match(line.rstrip("\r\n"))
    if m is None:
        return None
    return KlogLine(severity=m["severity"], source=m["source"], message=m["message"])


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value[1:-1]
        return decoded if isinstance(decoded, str) else value[1:-1]
    return value


def split_message(message: str) -> tuple[str, dict[str, str]]:
    """A structured message `"Msg" k=v k2="v 2"` as ("Msg", {k: v, k2: "v 2"}); an
    unstructured one as (message, {})."""
    if not message.startswith('"'):
        return message, {}
    m = re.match(_QUOTED, message)
    if m is None:
        return message, {}
    head = _unquote(m.group(0))
    return head, {k: _unquote(v) for k, v in _KV.findall(message[m.end() :])}


def classify(message: str, lease: str) -> tuple[str, str] | None:
    """What a leader election line means for `lease` ("namespace/name"): (kind, text)
    with kind one of ACQUIRED, RENEW_FAILED, LOST, STOPPED, or None; BECAME with the
    identity as its text. Both the
    structured messages of client-go since v1.30 (`"Successfully acquired lease"
    lock="kube-system/kube-controller-manager"`) and the older unstructured ones
    (`successfully acquired lease kube-system/kube-controller-manager`) count."""
    head, kv = split_message(message)
    low = head.lower()

    def lock_is_ours() -> bool:
        lock = kv.get("lock")
        if lock is None and (m := _LOCK_AFTER.search(head)) is not None:
            lock = m.group(1)
        return lock is None or lock == lease

    if low.startswith("successfully acquired lease"):
        return (ACQUIRED, head) if lock_is_ours() else None
    if low.startswith("failed to renew lease"):
        return (RENEW_FAILED, head) if lock_is_ours() else None
    if low.startswith("leaderelection lost"):
        # KCM: "leaderelection lost/stopped"; kube-scheduler: "Leaderelection lost". KCM's
        # "migration leaderelection lost/stopped" is about another lock.
        return LOST, head
    if head == "Event occurred" and kv.get("reason") == "LeaderElection":
        text = kv.get("message", "")
        if kv.get("object") != lease:
            return None
        if text.endswith(" stopped leading"):
            return STOPPED, text
        if text.endswith(" became leader"):
            return BECAME, text.removesuffix(" became leader")
    return None


# --- instances ---------------------------------------------------------------------------


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
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "finishedAtEstimated": self.finished_at_estimated,
            "exitCode": self.exit_code,
            "reason": self.reason or None,
            "log": str(self.log),
            "stateFile": self.has_state,
        }


def iso(t: datetime | None) -> str | None:
    """A time as the reports print it: UTC, microseconds, `Z` (None stays None)."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_iso = iso


def _parse_time(value: Any, where: Path) -> datetime | None:
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
        started_at=_parse_time(state.get("startedAt"), where),
        finished_at=_parse_time(state.get("finishedAt"), where),
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


# --- intervals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # ACQUIRED, RENEW_FAILED, LOST, STOPPED, BECAME
    time: datetime
    text: str
    line_number: int
    line_before: datetime | None = None
    """The time of the instance's last log line before this one (None: the first)."""


@dataclass(frozen=True)
class ScannedLog:
    """What the oracle needs of one instance's log: its leader election events and
    the time of its last line."""

    events: tuple[Event, ...]
    last_line: datetime | None


def scan_log(lines: Iterable[LogLine], *, lease: str) -> ScannedLog:
    """The leader election events of one instance's log lines, in log order, each with
    the time of the line before it, and the time of the last line."""
    events: list[Event] = []
    previous: datetime | None = None
    for line in lines:
        if _INTERESTING.search(line.text):
            klog = parse_klog(line.text)
            meaning = classify(klog.message if klog else line.text, lease)
            if meaning is not None:
                events.append(
                    Event(
                        kind=meaning[0],
                        time=line.time,
                        text=meaning[1],
                        line_number=line.number,
                        line_before=previous,
                    )
                )
        previous = line.time if previous is None else max(previous, line.time)
    return ScannedLog(events=tuple(events), last_line=previous)


def parse_events(lines: Iterable[LogLine], *, lease: str) -> list[Event]:
    """The leader election events of one instance's log lines, in log order."""
    return list(scan_log(lines, lease=lease).events)


def identity_of(events: Sequence[Event]) -> str:
    """The instance's identity on the Lease, from its `became leader` event ("" if it
    logged none)."""
    return next((e.text for e in events if e.kind == BECAME), "")


@dataclass(frozen=True)
class LeadInterval:
    """From the instance's "Successfully acquired lease" until its last sign of acting
    as leader (see the module)."""

    instance: Instance
    acquired: datetime
    until: datetime
    ended_by: str
    """"exited" (the runtime's finishedAt, or estimated: see `instance`); "last line"
    (still running after it logged its loss, or acquired again later); "running"
    (now)."""
    detail: str = ""
    gave_up: datetime | None = None
    """When it logged that it no longer leads ("Failed to renew lease", ...), if it
    did: it may still act after that, until `until`."""
    identity: str = ""

    @property
    def seconds(self) -> float:
        return (self.until - self.acquired).total_seconds()

    @property
    def still_leading(self) -> bool:
        return self.ended_by == "running"

    def describe_end(self) -> str:
        if self.ended_by == "exited":
            return self.detail or "exited"
        if self.ended_by == "running":
            return "still leading (running)" if self.instance.has_state else "no state file"
        return self.detail or self.ended_by

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance.name,
            "pod": self.instance.pod,
            "node": self.instance.node,
            "restartCount": self.instance.restart_count,
            "containerID": self.instance.container_id or None,
            "identity": self.identity or None,
            "acquired": _iso(self.acquired),
            "gaveUp": _iso(self.gave_up),
            "until": _iso(self.until),
            "seconds": round(self.seconds, 6),
            "endedBy": self.ended_by,
            "detail": self.detail or None,
            "stillLeading": self.still_leading,
        }


def _exit_detail(instance: Instance) -> str:
    code = "?" if instance.exit_code is None else str(instance.exit_code)
    text = f"exited {code}"
    if instance.reason:
        text += f" ({instance.reason})"
    if instance.finished_at_estimated:
        text += ", end estimated"
    return text


_END_KINDS: Final = (RENEW_FAILED, LOST, STOPPED)


def lead_intervals(
    instance: Instance,
    events: Sequence[Event],
    now: datetime,
    *,
    last_line: datetime | None = None,
) -> list[LeadInterval]:
    """An instance's lead intervals from its events, each until its last sign of
    acting as leader (see the module); `last_line` is the time of the log's last
    line."""
    out: list[LeadInterval] = []
    identity = identity_of(events)
    finished = instance.finished_at
    acquisitions = [e for e in events if e.kind == ACQUIRED]
    for n, acq in enumerate(acquisitions):
        following = acquisitions[n + 1] if n + 1 < len(acquisitions) else None
        window = [
            e
            for e in events
            if e.kind in _END_KINDS
            and e.line_number > acq.line_number
            and (following is None or e.line_number < following.line_number)
        ]
        gave_up = window[0].time if window else None
        gave_up_text = f'last line, after "{window[0].text}"' if window else ""
        if following is not None:
            end = following.line_before or acq.time
            why, detail = "last line", gave_up_text or "last line before acquiring again"
        elif finished is not None:
            end = max(finished, last_line or finished)
            why, detail = "exited", _exit_detail(instance)
        elif gave_up is not None:
            end = last_line or gave_up
            why, detail = "last line", f"{gave_up_text}; still running"
        else:
            end, why, detail = now, "running", ""
        out.append(
            LeadInterval(
                instance,
                acq.time,
                max(end, acq.time),
                why,
                detail,
                gave_up=gave_up,
                identity=identity,
            )
        )
    return out


# --- freezes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freeze:
    """A container's process stopped (SIGSTOP) at `stopped` and resumed (SIGCONT) at
    `resumed` (None: not yet, or nobody recorded it)."""

    container_id: str
    stopped: datetime
    resumed: datetime | None = None
    node: str = ""
    pod: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "containerID": self.container_id,
            "node": self.node or None,
            "pod": self.pod or None,
            "stopped": _iso(self.stopped),
            "resumed": _iso(self.resumed),
        }


def read_freezes(root: Path) -> list[Freeze]:
    """The lab's freeze journal (`FREEZES`); [] without one."""
    path = root / FREEZES
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LeadersError(f"{path}: unreadable: {exc}") from exc
    found: dict[tuple[str, datetime], Freeze] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise LeadersError(f"{path}:{number}: not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not doc.get("containerID") or not doc.get("stopped"):
            raise LeadersError(f"{path}:{number}: needs containerID and stopped")
        stopped = _parse_time(doc["stopped"], path)
        assert stopped is not None
        freeze = Freeze(
            container_id=str(doc["containerID"]),
            stopped=stopped,
            resumed=_parse_time(doc.get("resumed"), path),
            node=str(doc.get("node") or ""),
            pod=str(doc.get("pod") or ""),
        )
        found[(freeze.container_id, freeze.stopped)] = freeze
    return sorted(found.values(), key=lambda f: f.stopped)


def record_freeze(root: Path, freeze: Freeze) -> None:
    """Append a freeze (or its resume: the same container and `stopped`) to the lab's
    journal."""
    path = root / FREEZES
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(freeze.to_json(), sort_keys=True) + "\n")


def frozen_at(freezes: Sequence[Freeze], container_id: str, t: datetime) -> Freeze | None:
    """The freeze of `container_id` in force at `t`, if any."""
    for f in freezes:
        if (
            f.container_id == container_id
            and f.stopped <= t
            and (f.resumed is None or t <= f.resumed)
        ):
            return f
    return None


# --- overlaps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    """Two instances that both acted as leaders, from `start` to `end`; `kind` is
    TWO_LEADERS or FROZEN (then `freeze` is the freeze of `first` that explains it)."""

    first: LeadInterval
    second: LeadInterval
    start: datetime
    end: datetime
    kind: str = TWO_LEADERS
    freeze: Freeze | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def describe(self) -> str:
        text = (
            f"{self.first.instance.name} and {self.second.instance.name} both led for "
            f"{self.seconds:.3f}s from {_iso(self.start)} to {_iso(self.end)}"
        )
        if self.freeze is not None:
            resumed = _iso(self.freeze.resumed) or "never"
            text += (
                f" (the first was frozen from {_iso(self.freeze.stopped)}, resumed "
                f"{resumed}: client-go's allowance, not two leaders)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "first": self.first.instance.name,
            "second": self.second.instance.name,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "seconds": round(self.seconds, 6),
            "freeze": self.freeze.to_json() if self.freeze else None,
        }


def _freeze_explains(
    a: LeadInterval,
    b: LeadInterval,
    freezes: Sequence[Freeze],
    tolerance: float,
    renew_deadline: float,
) -> Freeze | None:
    """A freeze of `a`'s container, begun while it led and before `b` acquired, after
    whose resume `a` acted no longer than the renew deadline (+ `FROZEN_EXIT_S` for its
    exit, + the tolerance)."""
    cid = a.instance.container_id
    if not cid:
        return None
    slack = timedelta(seconds=tolerance)
    for f in freezes:
        if f.container_id != cid:
            continue
        if not (a.acquired - slack <= f.stopped <= b.acquired + slack):
            continue
        if f.resumed is None or a.until <= f.resumed + timedelta(
            seconds=renew_deadline + FROZEN_EXIT_S + tolerance
        ):
            return f
    return None


def find_overlaps(
    intervals: Sequence[LeadInterval],
    tolerance: float = DEFAULT_TOLERANCE_S,
    *,
    freezes: Sequence[Freeze] = (),
    renew_deadline: float = RENEW_DEADLINE_S,
) -> list[Overlap]:
    """Every pair of intervals of different instances overlapping by more than
    `tolerance` seconds, in order of their start; each TWO_LEADERS, or FROZEN when a
    freeze of the earlier one explains it."""
    ordered = sorted(intervals, key=lambda i: i.acquired)
    out = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.acquired >= a.until:
                continue
            if a.instance.log == b.instance.log:
                continue
            start, end = max(a.acquired, b.acquired), min(a.until, b.until)
            if (end - start).total_seconds() <= tolerance:
                continue
            freeze = _freeze_explains(a, b, freezes, tolerance, renew_deadline)
            out.append(Overlap(a, b, start, end, FROZEN if freeze else TWO_LEADERS, freeze))
    out.sort(key=lambda o: (o.start, o.first.instance.name, o.second.instance.name))
    return out


# --- all of it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderReport:
    root: Path
    component: str
    lease: str
    tolerance: float
    now: datetime
    instances: tuple[Instance, ...]
    intervals: tuple[LeadInterval, ...]
    overlaps: tuple[Overlap, ...]
    """Two leaders at once (TWO_LEADERS): what must never be."""
    frozen: tuple[Overlap, ...] = field(default=())
    """Overlaps of a frozen leader that woke up (FROZEN): client-go's, shown apart."""
    freezes: tuple[Freeze, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.overlaps

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "component": self.component,
            "lease": self.lease,
            "toleranceSeconds": self.tolerance,
            "toleranceMilliseconds": round(self.tolerance * 1000, 3),
            "now": _iso(self.now),
            "ok": self.ok,
            "instances": [i.to_json() for i in self.instances],
            "intervals": [i.to_json() for i in self.intervals],
            "overlaps": [o.to_json() for o in self.overlaps],
            "frozenOverlaps": [o.to_json() for o in self.frozen],
            "freezes": [f.to_json() for f in self.freezes],
            "warnings": list(self.warnings),
        }


def default_lease(component: str) -> str:
    spec = COMPONENTS.get(component)
    if spec is None:
        return f"kube-system/{component}"
    return f"{spec.lease_namespace}/{spec.lease_name}"


def analyze(
    root: Path,
    component: str = DEFAULT_COMPONENT,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: datetime | None = None,
    lease: str | None = None,
    renew_deadline: float = RENEW_DEADLINE_S,
) -> LeaderReport:
    """Lead intervals of every instance of `component` in the lab `root`'s log
    archives, and their overlaps beyond `tolerance` seconds (the measurement error;
    see `TOLERANCE_MS`), those explained by a recorded freeze apart. `lease`
    ("namespace/name") defaults to the component's."""
    now = now or datetime.now(UTC)
    lease = lease or default_lease(component)
    instances = find_instances(root, component)
    freezes = read_freezes(root)
    intervals: list[LeadInterval] = []
    warnings: list[str] = []
    for n, instance in enumerate(instances):
        if not instance.has_state:
            warnings.append(f"{instance.name}: no state file; taken as still running")
        elif (ended := end_if_gone(instance)) is not None:
            warnings.append(
                f"{instance.name}: container gone without a recorded end; "
                "taken as ended at its last log line"
            )
            instances[n] = instance = ended
        try:
            with open(instance.log, encoding="utf-8", errors="replace") as fh:
                scanned = scan_log(read_cri_log(fh), lease=lease)
        except FileNotFoundError:
            warnings.append(f"{instance.name}: log removed while reading")
            continue
        intervals.extend(lead_intervals(instance, scanned.events, now, last_line=scanned.last_line))
    intervals.sort(key=lambda i: (i.acquired, i.instance.name))
    found = find_overlaps(intervals, tolerance, freezes=freezes, renew_deadline=renew_deadline)
    return LeaderReport(
        root=root,
        component=component,
        lease=lease,
        tolerance=tolerance,
        now=now,
        instances=tuple(instances),
        intervals=tuple(intervals),
        overlaps=tuple(o for o in found if o.kind == TWO_LEADERS),
        frozen=tuple(o for o in found if o.kind == FROZEN),
        freezes=tuple(freezes),
        warnings=tuple(warnings),
    )
