"""Never two leaders: who led, and when, as the components' own logs tell it.

Every container instance of a component in a lab (the static pods
`<component>-<node>` and the pods of a Deployment, each start separately) leaves a
log and a state file under its node's root (see `kubehoist.lab.kubelet.runtime`):

    <node-root>/var/log/pods/<ns>_<pod>_<uid>/<container>/<restartCount>.log
    <node-root>/var/log/pods/<ns>_<pod>_<uid>/<container>/<restartCount>.state.json

From client-go's leader election lines in the log (klog text format) each instance's
*lead intervals* are built: one starts at `"Successfully acquired lease"` for the
component's Lease, and ends at the earliest of `"Failed to renew lease"` (the
instance stops believing it leads), `leaderelection lost` (the component's
OnStoppedLeading), a `stopped leading` event, the instance's `finishedAt`, or, for an
instance still running, now. Two intervals of different instances that overlap by
more than a tolerance are two leaders at once.

klog stamps lines with the process's local time and no year: the time zone is the
container's (its `TZ` if its environment sets one, else the host's /etc/localtime,
which every lab container sees), and the year is the one that puts the line at or
after the instance's `startedAt`.

`analyze(root)` does it all and returns a `LeaderReport`; `parse_events`,
`lead_intervals` and `find_overlaps` are the pure steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubehoist.components import COMPONENTS

DEFAULT_COMPONENT: Final = "kube-controller-manager"
DEFAULT_TOLERANCE_S: Final = 10.0
"""The components' default renew deadline: how long a leader that cannot renew may
still believe it leads."""
HOST_LOCALTIME: Final = Path("/etc/localtime")
STATE_SUFFIX: Final = ".state.json"  # as kubehoist.lab.kubelet.runtime writes it

ACQUIRED: Final = "acquired"
RENEW_FAILED: Final = "failed to renew lease"
LOST: Final = "leaderelection lost"
STOPPED: Final = "stopped leading"

_YEAR_SLACK = timedelta(hours=1)  # when choosing a line's year
EARLY_SLACK: Final = timedelta(seconds=2)
"""How much earlier than its instance's startedAt a line may be stamped (the kubelet
takes startedAt just after starting the launcher, on the same clock)."""

_KLOG = re.compile(
    r"^(?P<severity>[IWEF])(?P<month>\d\d)(?P<day>\d\d) "
    r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)\.(?P<micro>\d{6})\s+"
    r"(?P<thread>\d+) (?P<source>[^\]\s]+)\] (?P<message>.*)$"
)
_INTERESTING = re.compile(
    r"acquired lease|renew lease|leaderelection lost|stopped leading", re.IGNORECASE
)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_KV = re.compile(rf"([A-Za-z_][\w.-]*)=({_QUOTED}|\S+)")
_LOCK_AFTER = re.compile(r"lease\s+([^\s:\"]+)", re.IGNORECASE)


class LeadersError(Exception):
    """A lab root or a state file that cannot be read."""


# --- klog lines ------------------------------------------------------------------------


@dataclass(frozen=True)
class KlogLine:
    """One klog text-format line: header fields and the message after `] `."""

    severity: str
    month: int
    day: int
    hour: int
    minute: int
    second: int
    microsecond: int
    source: str
    message: str

    def local_time(self, year: int, tz: tzinfo) -> datetime:
        return datetime(
            year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.microsecond,
            tzinfo=tz,
        )


def parse_klog(line: str) -> KlogLine | None:
    m = _KLOG.match(line.rstrip("\r\n"))
    if m is None:
        return None
    return KlogLine(
        severity=m["severity"],
        month=int(m["month"]),
        day=int(m["day"]),
        hour=int(m["hour"]),
        minute=int(m["minute"]),
        second=int(m["second"]),
        microsecond=int(m["micro"]),
        source=m["source"],
        message=m["message"],
    )


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
    with kind one of ACQUIRED, RENEW_FAILED, LOST, STOPPED, or None. Both the
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
        if text.endswith("stopped leading") and kv.get("object") == lease:
            return STOPPED, text
    return None


# --- instances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One start of a component's container, from its state file and its log's path."""

    log: Path
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
    time_zone: str | None = None
    has_state: bool = False

    @property
    def name(self) -> str:
        """pod/node/restartCount"""
        return f"{self.pod}/{self.node}/{self.restart_count}"

    @property
    def running(self) -> bool:
        return self.finished_at is None

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


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any, where: Path) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise LeadersError(f"{where}: bad timestamp {value!r}") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def instance_from_files(log: Path, state: dict[str, Any] | None, node: str) -> Instance:
    """An instance from its log's path (…/<ns>_<pod>_<uid>/<container>/<n>.log) and its
    state file's document (None if it has none)."""
    pod_dir = log.parent.parent.name
    namespace, _, rest = pod_dir.partition("_")
    pod, _, uid = rest.rpartition("_")
    base = Instance(
        log=log,
        node=node,
        namespace=namespace,
        pod=pod,
        pod_uid=uid,
        container=log.parent.name,
        restart_count=int(log.name.removesuffix(".log")),
    )
    if state is None:
        return base
    where = log.with_name(log.name.removesuffix(".log") + STATE_SUFFIX)
    exit_code = state.get("exitCode")
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
        time_zone=state.get("timeZone") if isinstance(state.get("timeZone"), str) else None,
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
    """Every container instance of `component` under the lab root, oldest first."""
    nodes_dir = root / "nodes"
    if not nodes_dir.is_dir():
        raise LeadersError(f"{root}: not a lab root (no nodes/ directory)")
    found: list[Instance] = []
    for node_dir in sorted(p for p in nodes_dir.iterdir() if p.is_dir()):
        logs_dir = node_dir / "var" / "log"
        # Live pods, and the archived logs of pods the kubelet is done with.
        pod_dirs = [p for p in sorted((logs_dir / "pods").glob("*")) if p.is_dir()]
        pod_dirs += [p for p in sorted((logs_dir / "pods-removed").glob("*/*")) if p.is_dir()]
        for pod_dir in pod_dirs:
            try:
                containers = sorted(p for p in pod_dir.iterdir() if p.is_dir())
            except OSError:
                continue  # removed with its pod meanwhile
            for container_dir in containers:
                try:
                    if not _is_component_container(pod_dir, container_dir, component):
                        continue
                    logs = [
                        p
                        for p in container_dir.glob("*.log")
                        if re.fullmatch(r"\d+", p.name.removesuffix(".log"))
                    ]
                except OSError:
                    continue
                for log in logs:
                    found.append(instance_from_files(log, _read_state(log), node_dir.name))
    found.sort(key=lambda i: (i.started_at or datetime.max.replace(tzinfo=UTC), i.name))
    return found


def _read_state(log: Path) -> dict[str, Any] | None:
    path = log.with_name(log.name.removesuffix(".log") + STATE_SUFFIX)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LeadersError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(doc, dict):
        raise LeadersError(f"{path}: not a JSON object")
    return doc


# --- time ----------------------------------------------------------------------------------


def host_time_zone(path: Path = HOST_LOCALTIME) -> tzinfo:
    """The zone of a process without TZ: /etc/localtime, else UTC (as Go does)."""
    try:
        with open(path, "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


def zone_for(tz_env: str | None, host: tzinfo) -> tzinfo:
    """The zone Go's time.Local takes for a `TZ` value (None: unset)."""
    if tz_env is None:
        return host
    name = tz_env.removeprefix(":")
    if name in ("", "UTC"):
        return UTC
    try:
        if name.startswith("/"):
            with open(name, "rb") as fh:
                return ZoneInfo.from_file(fh, key=name)
        return ZoneInfo(name)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def resolve_time(
    line: KlogLine, tz: tzinfo, *, started_at: datetime | None, upper: datetime
) -> datetime:
    """The UTC time of a klog line. Its year: the earliest that puts it at or after
    `started_at` (less an hour of slack) and not after `upper` (plus that slack);
    without a start, the latest not after `upper`; else the nearest."""
    ref = started_at or upper
    base = ref.astimezone(tz).year
    candidates = []
    for year in (base - 1, base, base + 1):
        try:
            candidates.append(line.local_time(year, tz).astimezone(UTC))
        except ValueError:  # 29 February of a common year
            continue
    if not candidates:
        raise ValueError(f"no year has {line.month:02d}-{line.day:02d}")
    if started_at is not None:
        after = [c for c in candidates if started_at - _YEAR_SLACK <= c <= upper + _YEAR_SLACK]
        if after:
            return min(after)
    else:
        before = [c for c in candidates if c <= upper + _YEAR_SLACK]
        if before:
            return max(before)
    return min(candidates, key=lambda c: abs(c - ref))


# --- intervals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # ACQUIRED, RENEW_FAILED, LOST, STOPPED
    time: datetime
    text: str
    line_number: int


def parse_events(
    lines: Iterable[str],
    *,
    lease: str,
    tz: tzinfo,
    started_at: datetime | None,
    upper: datetime,
) -> list[Event]:
    """The leader election events of one instance's log, in log order. Lines older
    than `started_at` (less `EARLY_SLACK`) belong to an earlier run appended to the
    same file (a lab brought up again restarts its static pods at restart count 0):
    they are skipped."""
    events = []
    for number, line in enumerate(lines, 1):
        if not _INTERESTING.search(line):
            continue
        parsed = parse_klog(line)
        if parsed is None:
            continue
        meaning = classify(parsed.message, lease)
        if meaning is None:
            continue
        try:
            when = resolve_time(parsed, tz, started_at=started_at, upper=upper)
        except ValueError:
            continue
        if started_at is not None and when < started_at - EARLY_SLACK:
            continue
        events.append(Event(kind=meaning[0], time=when, text=meaning[1], line_number=number))
    return events


@dataclass(frozen=True)
class LeadInterval:
    """From the instance's "Successfully acquired lease" until it stopped leading."""

    instance: Instance
    acquired: datetime
    until: datetime
    ended_by: str
    """RENEW_FAILED, LOST or STOPPED; "exited" (finishedAt); "running" (now)."""
    detail: str = ""

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
        return f'"{self.detail}"' if self.detail else self.ended_by

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance.name,
            "pod": self.instance.pod,
            "node": self.instance.node,
            "restartCount": self.instance.restart_count,
            "containerID": self.instance.container_id or None,
            "acquired": _iso(self.acquired),
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


def lead_intervals(
    instance: Instance, events: Sequence[Event], now: datetime
) -> list[LeadInterval]:
    """An instance's lead intervals from its events: each acquisition until the first
    end line after it, else until the instance finished, else until `now`."""
    out: list[LeadInterval] = []
    finished = instance.finished_at
    opened: datetime | None = None
    for event in events:
        if event.kind == ACQUIRED:
            if opened is None:
                opened = event.time
            continue
        if opened is None:
            continue
        end, why, detail = event.time, event.kind, event.text
        if finished is not None and finished < end:
            end, why, detail = finished, "exited", _exit_detail(instance)
        out.append(LeadInterval(instance, opened, max(end, opened), why, detail))
        opened = None
    if opened is not None:
        if finished is not None:
            end, why, detail = finished, "exited", _exit_detail(instance)
        else:
            end, why, detail = now, "running", ""
        out.append(LeadInterval(instance, opened, max(end, opened), why, detail))
    return out


# --- overlaps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    """Two instances that both believed they led, from `start` to `end`."""

    first: LeadInterval
    second: LeadInterval
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def describe(self) -> str:
        return (
            f"{self.first.instance.name} and {self.second.instance.name} both led for "
            f"{self.seconds:.3f}s from {_iso(self.start)} to {_iso(self.end)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first.instance.name,
            "second": self.second.instance.name,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "seconds": round(self.seconds, 6),
        }


def find_overlaps(
    intervals: Sequence[LeadInterval], tolerance: float = DEFAULT_TOLERANCE_S
) -> list[Overlap]:
    """Every pair of intervals of different instances overlapping by more than
    `tolerance` seconds, in order of their start."""
    ordered = sorted(intervals, key=lambda i: i.acquired)
    out = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.acquired >= a.until:
                continue
            if a.instance.log == b.instance.log:
                continue
            start, end = max(a.acquired, b.acquired), min(a.until, b.until)
            if (end - start).total_seconds() > tolerance:
                out.append(Overlap(a, b, start, end))
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
            "now": _iso(self.now),
            "ok": self.ok,
            "instances": [i.to_json() for i in self.instances],
            "intervals": [i.to_json() for i in self.intervals],
            "overlaps": [o.to_json() for o in self.overlaps],
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
    tz: tzinfo | None = None,
) -> LeaderReport:
    """Lead intervals of every instance of `component` under the lab `root`, and
    their overlaps beyond `tolerance` seconds. `lease` ("namespace/name") defaults to
    the component's; `tz` overrides the zone of every instance's klog times."""
    now = now or datetime.now(UTC)
    lease = lease or default_lease(component)
    host = host_time_zone()
    instances = find_instances(root, component)
    intervals: list[LeadInterval] = []
    warnings: list[str] = []
    for instance in instances:
        if not instance.has_state:
            warnings.append(f"{instance.name}: no state file; taken as still running")
        zone = tz or zone_for(instance.time_zone, host)
        try:
            with open(instance.log, encoding="utf-8", errors="replace") as fh:
                events = parse_events(
                    fh, lease=lease, tz=zone, started_at=instance.started_at, upper=now
                )
        except FileNotFoundError:
            warnings.append(f"{instance.name}: log removed while reading")
            continue
        intervals.extend(lead_intervals(instance, events, now))
    intervals.sort(key=lambda i: (i.acquired, i.instance.name))
    return LeaderReport(
        root=root,
        component=component,
        lease=lease,
        tolerance=tolerance,
        now=now,
        instances=tuple(instances),
        intervals=tuple(intervals),
        overlaps=tuple(find_overlaps(intervals, tolerance)),
        warnings=tuple(warnings),
    )
