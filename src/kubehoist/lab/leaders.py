"""Never two leaders, strictly: who led, and when, as the components' own logs and the
container runtime tell it.

Every container instance of a component in a lab (the static pods
`<component>-<node>` and the pods of a Deployment, each start separately) has its log
and a state file in its node's log archive (`kubehoist.lab.instances` finds them).

The logs are in the CRI format (`<RFC3339Nano> <stream> <P|F> <line>`): each line's
time is containerd's, in UTC; partial (`P`) lines are joined. From client-go's leader
election lines (klog text after the CRI prefix; `kubehoist.lab.leaderlogs` reads
them) each instance's *lead intervals* are built. One starts at
`"Successfully acquired lease"` for the component's Lease and lasts until the
process's **last sign of acting as leader**, not until it stops believing it leads: a
controller manager that logged "Failed to renew lease" still runs its controllers
until it exits. So an interval ends at

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
(`kubehoist.lab.freezes`, written by whoever sent SIGSTOP and SIGCONT:
`bench/chaos.py`); a frozen overlap is one where the earlier leader's container was
frozen before the other acquired, and it ended no later than its resume + the renew
deadline + one second for its exit (`FROZEN_EXIT_S`) + the tolerance. Anything beyond
is two leaders.

`analyze(root)` does it all and returns a `LeaderReport`; `leaderlogs.read_cri_log`,
`leaderlogs.parse_events`, `lead_intervals` and `find_overlaps` are the pure steps.
The guard's actions are judged against these intervals by `kubehoist.lab.oracle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from kubehoist.components import COMPONENTS
from kubehoist.lab.freezes import Freeze, read_freezes
from kubehoist.lab.instances import (
    DEFAULT_COMPONENT,
    Instance,
    end_if_gone,
    find_instances,
    iso,
)
from kubehoist.lab.leaderlogs import (
    ACQUIRED,
    LOST,
    RENEW_FAILED,
    STOPPED,
    Event,
    identity_of,
    read_cri_log,
    scan_log,
)

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

TWO_LEADERS: Final = "two-leaders"
FROZEN: Final = "frozen-leader"
"""The kinds of overlap: two leaders at once, and client-go's own allowance for a
frozen leader that wakes up (see the module)."""


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
            "acquired": iso(self.acquired),
            "gaveUp": iso(self.gave_up),
            "until": iso(self.until),
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
            f"{self.seconds:.3f}s from {iso(self.start)} to {iso(self.end)}"
        )
        if self.freeze is not None:
            resumed = iso(self.freeze.resumed) or "never"
            text += (
                f" (the first was frozen from {iso(self.freeze.stopped)}, resumed "
                f"{resumed}: client-go's allowance, not two leaders)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "first": self.first.instance.name,
            "second": self.second.instance.name,
            "from": iso(self.start),
            "to": iso(self.end),
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
            "now": iso(self.now),
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
