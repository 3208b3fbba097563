"""The lab's oracle: never two leaders (`kubehoist.lab.leaders`), and the guard never
wrong, judged from what the components and the guards logged and the runtime recorded.

Besides the overlaps of lead intervals, it checks the guard's actions, read from the
guards' own JSON lines in the log archive
(`kube-system_kubehoist-guard-<component>-<node>_<uid>/guard/<n>.log`, kept by the log
keeper), against the lead intervals:

- **no fallback while a valid leader existed**: at a `Fallback` (the time the guard
  stamped on its record, when it acted; one kernel clock in the lab), no instance was
  inside a lead interval — by more than the tolerance on either side — unless that
  instance was frozen then (a frozen leader's Lease expires like a dead one's, and
  its waking up is client-go's allowance, `leaders.FROZEN`);
- **no reap of a holder that was not dead**: at a `Reap` of holder H, the instance
  whose identity is H (its `became leader` event) had exited, as the runtime recorded
  it (`finishedAt`, within the tolerance). A holder whose instance cannot be found, or
  whose end is only estimated (gone without a recorded end) before the reap, is not
  proved either way: a warning, not a violation;

and, when given what they must be, the component's manifests on every control-plane
node (`check_manifests`): byte for byte the original, parked (or, after a rollback,
in place), and not both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from kubehoist.lab import instances, leaderlogs, leaders
from kubehoist.lab.freezes import Freeze, frozen_at
from kubehoist.lab.instances import DEFAULT_COMPONENT
from kubehoist.lab.leaders import DEFAULT_TOLERANCE_S, LeaderReport, LeadInterval
from kubehoist.lab.logarchive import ARCHIVE_DIR, ARCHIVE_LOG

FALLBACK_WHILE_LED: Final = "fallback-while-led"
REAP_ALIVE: Final = "reap-of-live-holder"
MANIFEST: Final = "manifest"
GUARD_CONTAINER: Final = "guard"
PARKED_DIR: Final = Path("etc/kubernetes/kubehoist/parked")
MANIFESTS_DIR: Final = Path("etc/kubernetes/manifests")


def guard_pod_prefix(component: str) -> str:
    return f"kubehoist-guard-{component}-"


@dataclass(frozen=True)
class GuardAction:
    """One action a guard logged: Fallback, HandBack or Reap."""

    node: str
    action: str
    time: datetime  # the record's `ts` (when the guard acted), else the line's CRI time
    holder: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "action": self.action,
            "time": instances.iso(self.time),
            "holder": self.holder or None,
            "result": self.record.get("result"),
            "reason": self.record.get("reason"),
        }


@dataclass(frozen=True)
class Violation:
    kind: str  # FALLBACK_WHILE_LED, REAP_ALIVE, MANIFEST
    text: str
    time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": instances.iso(self.time), "text": self.text}


def _record_time(record: Mapping[str, Any], fallback: datetime) -> datetime:
    ts = record.get("ts")
    if isinstance(ts, str) and ts:
        try:
            t = datetime.fromisoformat(ts)
        except ValueError:
            return fallback
        return t if t.tzinfo is not None else fallback
    return fallback


def read_guard_actions(root: Path, component: str = DEFAULT_COMPONENT) -> list[GuardAction]:
    """Every action record of every guard instance of `component` in the lab's log
    archives, in time order."""
    prefix = guard_pod_prefix(component)
    out: list[GuardAction] = []
    nodes_dir = root / "nodes"
    if not nodes_dir.is_dir():
        raise instances.LeadersError(f"{root}: not a lab root (no nodes/ directory)")
    for node_dir in sorted(p for p in nodes_dir.iterdir() if p.is_dir()):
        archive = node_dir / ARCHIVE_DIR
        for log in sorted(archive.glob(f"kube-system_{prefix}*/{GUARD_CONTAINER}/*.log")):
            if not ARCHIVE_LOG.fullmatch(log.name):
                continue
            with open(log, encoding="utf-8", errors="replace") as fh:
                for line in leaderlogs.read_cri_log(fh):
                    if not line.text.startswith("{"):
                        continue
                    try:
                        record = json.loads(line.text)
                    except ValueError:
                        continue
                    if not isinstance(record, dict) or record.get("event") != "action":
                        continue
                    out.append(
                        GuardAction(
                            node=str(record.get("node") or node_dir.name),
                            action=str(record.get("action", "")),
                            time=_record_time(record, line.time),
                            holder=str(record.get("holder") or ""),
                            record=record,
                        )
                    )
    out.sort(key=lambda a: (a.time, a.node))
    return out


def check_fallbacks(
    actions: Sequence[GuardAction],
    intervals: Sequence[LeadInterval],
    freezes: Sequence[Freeze] = (),
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> list[Violation]:
    """Fallbacks made while some instance led (and was not frozen)."""
    slack = timedelta(seconds=tolerance)
    out = []
    for a in actions:
        if a.action != "Fallback":
            continue
        for i in intervals:
            if not (i.acquired + slack < a.time < i.until - slack):
                continue
            if frozen_at(freezes, i.instance.container_id, a.time) is not None:
                continue
            out.append(
                Violation(
                    FALLBACK_WHILE_LED,
                    f"the guard on {a.node} fell back at {instances.iso(a.time)} while "
                    f"{i.instance.name} led ({instances.iso(i.acquired)} to "
                    f"{instances.iso(i.until)}, {i.describe_end()})",
                    a.time,
                )
            )
    return out


def check_reaps(
    actions: Sequence[GuardAction],
    intervals: Sequence[LeadInterval],
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> tuple[list[Violation], list[str]]:
    """Reaps of a holder whose process had not exited; and the reaps that cannot be
    judged (warnings)."""
    slack = timedelta(seconds=tolerance)
    violations: list[Violation] = []
    warnings: list[str] = []
    for a in actions:
        if a.action != "Reap" or not a.holder:
            continue
        if str(a.record.get("result", "")) != "released":
            continue  # the Lease had changed: nothing was released
        held = [i for i in intervals if i.identity == a.holder and i.acquired <= a.time]
        if not held:
            warnings.append(
                f"reap by the guard on {a.node} at {instances.iso(a.time)}: no instance "
                f"with identity {a.holder} in the archives (not judged)"
            )
            continue
        interval = max(held, key=lambda i: i.acquired)
        instance = interval.instance
        end = instance.finished_at
        if end is None or end > a.time + slack:
            state = "still running" if end is None else f"exited at {instances.iso(end)}"
            violations.append(
                Violation(
                    REAP_ALIVE,
                    f"the guard on {a.node} reaped {a.holder} at {instances.iso(a.time)} "
                    f"but {instance.name} was alive ({state})",
                    a.time,
                )
            )
        elif instance.finished_at_estimated:
            warnings.append(
                f"reap of {a.holder} at {instances.iso(a.time)}: {instance.name}'s end is "
                "only estimated (its last log line); not judged"
            )
    return violations, warnings


def check_manifests(
    node_roots: Mapping[str, Path],
    filename: str,
    expected: Mapping[str, bytes],
    *,
    parked: bool = True,
) -> list[Violation]:
    """Every node's manifest `filename` byte for byte `expected[node]`, parked (under
    /etc/kubernetes/kubehoist/parked) or, with `parked=False`, in the kubelet's
    manifests directory — and not in the other place."""
    out = []
    for node, want in sorted(expected.items()):
        root = node_roots[node]
        here = root / (PARKED_DIR if parked else MANIFESTS_DIR) / filename
        other = root / (MANIFESTS_DIR if parked else PARKED_DIR) / filename
        try:
            got = here.read_bytes()
        except FileNotFoundError:
            out.append(Violation(MANIFEST, f"node {node}: {here} is missing"))
            continue
        if got != want:
            out.append(
                Violation(
                    MANIFEST, f"node {node}: {here} differs from the original ({len(got)} bytes)"
                )
            )
        if other.exists():
            out.append(Violation(MANIFEST, f"node {node}: {other} exists as well"))
    return out


@dataclass(frozen=True)
class OracleReport:
    leaders: LeaderReport
    actions: tuple[GuardAction, ...]
    violations: tuple[Violation, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.leaders.ok and not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            **self.leaders.to_json(),
            "ok": self.ok,
            "guardActions": [a.to_json() for a in self.actions],
            "violations": [v.to_json() for v in self.violations],
            "warnings": [*self.leaders.warnings, *self.warnings],
        }


def judge(
    root: Path,
    component: str = DEFAULT_COMPONENT,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: datetime | None = None,
) -> OracleReport:
    """The leaders' report of the lab at `root`, and the guard's actions checked
    against it."""
    report = leaders.analyze(root, component, tolerance=tolerance, now=now)
    actions = read_guard_actions(root, component)
    violations = check_fallbacks(actions, report.intervals, report.freezes, tolerance)
    reaped, warnings = check_reaps(actions, report.intervals, tolerance)
    return OracleReport(
        leaders=report,
        actions=tuple(actions),
        violations=tuple(violations + reaped),
        warnings=tuple(warnings),
    )
