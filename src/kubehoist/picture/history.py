"""PURE: a `kubehoist watch --output jsonl` recording read back as intervals.

For each component: the candidates (a lane each, in order of appearance) with the
spans when each stood by (Ready), was there but not Ready, and led; the gaps with
no valid leader, with the lease gap the watch measured; and the guards' actions.

The watch's figures are authoritative: a `leader_changed` with `lease_gap_s` g at t
means nobody led during [t - g, t]; the old leader's span ends where the gap starts.
A holder reported expired or released and nobody after it until the recording ends
is an open gap. Records of kinds this module does not know are skipped, so a newer
watch's recording still reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kubehoist.errors import KubehoistError

LEAD: Final = "leader"
STANDBY: Final = "standby"
NOT_READY: Final = "not ready"


@dataclass(frozen=True, kw_only=True)
class Span:
    start: float
    end: float
    state: str
    """LEAD, STANDBY or NOT_READY."""


@dataclass(frozen=True, kw_only=True)
class Gap:
    start: float
    end: float
    measured: bool
    """False when the watch's figures rest on less than a full view."""
    open: bool = False
    """Nobody led again before the recording ended."""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, kw_only=True)
class Action:
    at: float
    action: str
    node: str | None
    message: str


@dataclass
class Lane:
    key: str
    """The pod's name, or the holder identity when no pod matched it."""
    node: str | None = None
    kind: str | None = None
    spans: list[Span] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.key} ({self.node})" if self.node else self.key


@dataclass
class ComponentHistory:
    component: str
    lanes: dict[str, Lane] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    silences: list[Gap] = field(default_factory=list)
    """The Lease still named a holder that no longer renewed it (a dead leader's Lease
    waiting to expire): from its last renewal to the gap (or the new holder)."""
    actions: list[Action] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class History:
    start: float
    end: float
    started_at: str | None
    """The wall time of the first record (UTC, as the watch wrote it)."""
    components: tuple[ComponentHistory, ...]


def parse_lines(lines: Iterable[str], *, name: str = "<stdin>") -> list[dict[str, Any]]:
    """The JSON records of a recording; blank lines skipped, anything else an error."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KubehoistError(f"{name}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("t"), int | float):
            raise KubehoistError(f"{name}:{number}: not a watch event (no number `t`)")
        out.append(record)
    return out


class _Builder:
    """One component's state while its records are replayed in order."""

    def __init__(self, component: str) -> None:
        self.out = ComponentHistory(component=component)
        self.present: dict[str, tuple[float, str]] = {}
        """lane -> (since, STANDBY or NOT_READY) while the pod exists."""
        self.leader: tuple[str, float] | None = None
        self.vacant: tuple[float, bool] | None = None
        """Since when nobody holds a valid lease, and whether that was fully seen."""
        self.ended: tuple[str, int] | None = None
        """The last leader's span ended by an expiry or a release (lane, index): an
        expiry is reported at the first tick after it, and the watch's lease gap of the
        next leader change says when it really was."""

    def lane(self, key: str, record: Mapping[str, Any] | None = None) -> str:
        lane = self.out.lanes.setdefault(key, Lane(key=key))
        if record is not None and record.get("pod") == key:
            lane.node = record.get("node") or lane.node
            lane.kind = record.get("kind") or lane.kind
        return key

    def be(self, key: str, state: str | None, t: float) -> None:
        """The pod `key` is in `state` from t (None: gone)."""
        was = self.present.pop(key, None)
        if was is not None and was[1] == state:
            self.present[key] = was
            return
        if was is not None and t > was[0]:
            self.out.lanes[key].spans.append(Span(start=was[0], end=t, state=was[1]))
        if state is not None:
            self.present[self.lane(key)] = (t, state)

    def lead(self, key: str | None, t: float, *, ended: float | None = None) -> None:
        """`key` leads from t (None: nobody); the old leader stopped at `ended` (else t)."""
        if self.leader is not None:
            old, since = self.leader
            stop = max(since, t if ended is None else ended)
            if stop > since:
                self.out.lanes[old].spans.append(Span(start=since, end=stop, state=LEAD))
                self.ended = (old, len(self.out.lanes[old].spans) - 1)
        self.leader = (self.lane(key), t) if key is not None else None

    def trim(self, until: float) -> None:
        """The leader ended by the last expiry or release led only until `until`."""
        if self.ended is None:
            return
        lane, index = self.ended
        span = self.out.lanes[lane].spans[index]
        if span.start <= until < span.end:
            self.out.lanes[lane].spans[index] = Span(start=span.start, end=until, state=LEAD)

    def vacate(self, t: float, *, measured: bool = True) -> None:
        self.lead(None, t)
        if self.vacant is None:
            self.vacant = (t, measured)

    def apply(self, r: Mapping[str, Any]) -> None:
        t = float(r["t"])
        kind = r.get("event")
        who = r.get("pod") or r.get("holder")
        if kind == "observing":
            ready = r.get("ready") if isinstance(r.get("ready"), list) else None
            listed = r.get("candidates")
            for name in listed if isinstance(listed, list) else []:
                up = ready is None or name in ready  # older recordings: assume Ready
                self.be(self.lane(str(name)), STANDBY if up else NOT_READY, t)
            if who:
                self.lead(self.lane(str(who), r), t)
            else:
                self.vacant = (t, False)
        elif kind == "leader_changed":
            gap = float(r.get("lease_gap_s") or 0.0)
            measured = bool(r.get("measured", True))
            quiet = r.get("since_last_renew_s")
            silent = float(quiet) if isinstance(quiet, int | float) and quiet > gap else None
            if silent is not None and self.leader is not None:
                # the old holder's last renewal ends its lead; then its Lease ran on alone
                self.out.silences.append(Gap(start=t - silent, end=t - gap, measured=measured))
            if gap > 0:
                start = t - gap
                self.out.gaps.append(Gap(start=start, end=t, measured=measured))
                if self.leader is None:
                    self.trim(start)
                ended = t - silent if silent is not None and self.leader is not None else start
                self.lead(self.lane(str(who), r) if who else None, t, ended=ended)
            elif silent is not None and self.leader is not None:
                self.lead(self.lane(str(who), r) if who else None, t, ended=t - silent)
            else:
                self.lead(self.lane(str(who), r) if who else None, t)
            self.vacant = None
            self.ended = None
        elif kind in ("lease_expired", "lease_released", "lease_deleted"):
            self.vacate(t, measured=bool(r.get("measured", True)))
        elif kind in ("lease_renewed", "lease_created") and who:
            if self.vacant is not None:
                since, measured = self.vacant
                self.out.gaps.append(Gap(start=since, end=t, measured=measured))
                self.vacant = None
            self.lead(self.lane(str(who), r), t)
        elif kind == "candidate_added" and r.get("pod"):
            self.be(self.lane(str(r["pod"]), r), STANDBY if r.get("ready") else NOT_READY, t)
        elif kind == "candidate_ready" and r.get("pod"):
            self.be(self.lane(str(r["pod"]), r), STANDBY, t)
        elif kind in ("candidate_not_ready", "candidate_terminating") and r.get("pod"):
            self.be(self.lane(str(r["pod"]), r), NOT_READY, t)
        elif kind == "candidate_removed" and r.get("pod"):
            self.be(str(r["pod"]), None, t)
        elif kind == "guard_action":
            self.out.actions.append(
                Action(
                    at=t,
                    action=str(r.get("action") or r.get("reason") or "?"),
                    node=r.get("node"),
                    message=str(r.get("message") or ""),
                )
            )

    def finish(self, end: float) -> ComponentHistory:
        for key in list(self.present):
            self.be(key, None, end)
        self.lead(None, end)
        if self.vacant is not None and end > self.vacant[0]:
            since, measured = self.vacant
            self.out.gaps.append(Gap(start=since, end=end, measured=measured, open=True))
        for lane in self.out.lanes.values():
            lane.spans.sort(key=lambda s: (s.start, s.state != LEAD))
        self.out.gaps.sort(key=lambda g: g.start)
        return self.out


def history(records: Iterable[Mapping[str, Any]]) -> History:
    """The intervals of every component in the recording, in order of appearance."""
    ordered = sorted(records, key=lambda r: float(r["t"]))
    if not ordered:
        raise KubehoistError("the recording is empty: nothing to draw")
    builders: dict[str, _Builder] = {}
    for r in ordered:
        component = r.get("component")
        if not isinstance(component, str) or component == "*":
            continue
        builders.setdefault(component, _Builder(component)).apply(r)
    start, end = float(ordered[0]["t"]), float(ordered[-1]["t"])
    return History(
        start=start,
        end=end,
        started_at=ordered[0].get("time"),
        components=tuple(b.finish(end) for b in builders.values()),
    )
