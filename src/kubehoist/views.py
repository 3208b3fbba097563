"""How status and watch look to a human: kubectl-style columns and durations.

Pure text: tables of `status` (default and `-o wide`), the lines of the watch
timeline, and kubectl's human durations ("45s", "5m30s", "3h"). The watch's rich
live view is built from the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kubehoist.election import Candidate, Role
from kubehoist.status import ComponentStatus, StatusReport
from kubehoist.timeline import Event, validity_text


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 5m30s, 45m, 3h15m, 30h, 5d, 2y."""
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(then: datetime | None, *, now: datetime) -> str:
    """Age of a server timestamp. Display only: never used to judge a lease."""
    return human_duration((now - then).total_seconds()) if then is not None else "<unknown>"


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl's printer."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines) + "\n"


def holder_text(s: ComponentStatus) -> str:
    a = s.assessment
    if s.lease is None:
        return "<no lease>"
    if not s.lease.holder:
        return "<none>"
    if a.leader is not None:
        return leader_label(a.leader)
    if a.identity is not None and a.identity.well_formed:
        return f"? {a.identity.hostname}"
    return f"? {s.lease.holder}"


def leader_label(c: Candidate) -> str:
    if c.kind.value == "static":
        return f"static pod on {c.node}"
    return f"{c.kind.value} pod {c.name}"


def renewed_text(s: ComponentStatus, *, now: float) -> str:
    """The validity column: by our clock, or 'unknown yet' when we did not watch."""
    if s.observation is None:
        return "-"
    if s.observed_s == 0 and s.observation.lease.held:
        return "unknown yet"
    return validity_text(s.observation, now=now)


def status_tables(report: StatusReport, *, now: float, wide: bool) -> str:
    wall = report.taken_at
    head = [
        "COMPONENT",
        "VERDICT",
        "HOLDER",
        "ACQUIRED",
        "RENEWED",
        "DURATION",
        "TRANSITIONS",
        "STANDBYS",
    ]
    if wide:
        head += ["IDENTITY", "REASON"]
    rows = [head]
    for s in report.components:
        lease = s.lease
        row = [
            s.component,
            s.assessment.verdict.value,
            holder_text(s),
            age(lease.acquire_time, now=wall) if lease and lease.acquire_time else "-",
            renewed_text(s, now=now),
            f"{lease.duration_s}s" if lease and lease.duration_s else "-",
            str(lease.transitions) if lease and lease.transitions is not None else "-",
            str(s.assessment.standbys),
        ]
        if wide:
            row += [lease.holder or "-" if lease else "-", s.assessment.reason]
        rows.append(row)
    out = columns(rows)
    chead = ["CANDIDATE", "COMPONENT", "KIND", "NODE", "READY", "RESTARTS", "AGE", "ROLE"]
    if wide:
        chead += ["HOSTNAME", "IP", "READY-SINCE"]
    crows = [chead]
    for s in report.components:
        for c in s.candidates:
            role = s.assessment.role(c.name)
            crow = [
                c.name,
                s.component,
                c.kind.value,
                c.node or "<none>",
                "True" if c.ready else "False",
                str(c.restarts),
                age(c.created, now=wall),
                role.value if isinstance(role, Role) else "-",
            ]
            if wide:
                crow += [
                    c.hostname or "-",
                    c.pod_ip or "<none>",
                    c.ready_since.isoformat().replace("+00:00", "Z") if c.ready_since else "-",
                ]
            crows.append(crow)
    if len(crows) > 1:
        out += "\n" + columns(crows)
    return out


def event_line(event: Event, *, origin: float) -> str:
    """One human line of the timeline."""
    d = dict(event.data)
    t = f"{event.at - origin:8.1f}s"
    head = f"{t}  {event.component}  {event.kind}"
    if event.kind == "leader_changed":
        who = d.get("pod") or d.get("holder")
        gap = d.get("lease_gap_s")
        silence = d.get("since_last_renew_s")
        note = "" if d.get("measured") else " (not fully observed)"
        before = d.get("previous_pod") or d.get("previous_holder")
        timing = f"lease gap {gap}s, {silence}s since last renewal{note}"
        return f"{head}: {before} -> {who}, {timing}"
    if event.kind in ("lease_expired", "lease_released", "lease_renewed"):
        return f"{head}: {d.get('pod') or d.get('holder')}"
    if event.kind.startswith("candidate_"):
        return f"{head}: {d.get('pod')} on {d.get('node')} ({d.get('kind')})"
    if event.kind == "verdict_changed":
        return f"{head}: {d.get('previous')} -> {d.get('verdict')} ({d.get('reason')})"
    if event.kind == "observing":
        return f"{head}: holder {d.get('pod') or d.get('holder')}, verdict {d.get('verdict')}"
    rest = ", ".join(f"{k}={v}" for k, v in d.items())
    return f"{head}: {rest}" if rest else head
