"""How status and watch look to a human: kubectl-style columns and durations.

Pure text: tables of `status` (default and `-o wide`, with the guards' tables), the
lines of the watch timeline, and kubectl's human durations ("45s", "5m30s", "3h").
The watch's rich live view is built from the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from kubehoist.election import Candidate, Observation, Role, parse_identity
from kubehoist.status import ComponentStatus, GuardStatus, StatusReport
from kubehoist.timeline import Event, validity_text

MESSAGE_WIDTH: Final = 60
"""An Event's message is cut to this many characters in the default table."""
_SPACES = re.compile(r"\s+")


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
    return observed_validity(s.observation, observed_s=s.observed_s, now=now)


def observed_validity(obs: Observation | None, *, observed_s: float, now: float) -> str:
    if obs is None:
        return "-"
    if observed_s == 0 and obs.lease.held:
        return "unknown yet"
    return validity_text(obs, now=now)


def one_line(text: str, *, width: int | None = None) -> str:
    """Text from the cluster on one line of printable characters, cut to `width`."""
    flat = _SPACES.sub(" ", text).strip()
    if not flat.isprintable():
        flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    if width is not None and len(flat) > width:
        flat = flat[: width - 3].rstrip() + "..."
    return flat


def guard_leader_text(g: GuardStatus, *, now: float) -> str:
    if g.observation is None:
        if g.lease_error is not None:
            return "<unreadable>"
        return "<no lease>" if g.pods else "<no guard installed>"
    leader = g.leader(now=now)
    if leader is not None:
        return one_line(leader)
    holder = g.observation.lease.holder
    return f"<none> (was {one_line(parse_identity(holder).hostname)})" if holder else "<none>"


def guard_tables(report: StatusReport, *, now: float, wide: bool) -> str:
    """The guards of each component: their Lease, their pods, their last Events, and
    one line for each guard read that failed. One quiet line when there is no guard."""
    wall = report.taken_at
    guards = [s.guard for s in report.components]
    out = ""
    if any(g.installed is not False for g in guards):
        head = ["COMPONENT", "GUARD LEADER", "LAST RENEW", "GUARD LEASE", "GUARDS READY"]
        if wide:
            head += ["IDENTITY"]
        rows = [head]
        for s in report.components:
            g = s.guard
            lease = g.lease
            row = [
                s.component,
                guard_leader_text(g, now=now),
                age(lease.renew_time, now=wall) if lease and lease.renew_time else "-",
                observed_validity(g.observation, observed_s=g.observed_s, now=now),
                f"{g.ready}/{len(g.pods)}" if g.installed else "-",
            ]
            if wide:
                row += [one_line(lease.holder) if lease and lease.holder else "-"]
            rows.append(row)
        out += "\n" + columns(rows)
    else:
        out += "\nNo guard installed.\n"
    prows = [["GUARD POD", "NODE", "READY", "RESTARTS", "AGE", "ROLE"]]
    for g in guards:
        for p in g.pods:
            prows.append(
                [
                    p.name,
                    p.node or "<none>",
                    "True" if p.ready else "False",
                    str(p.restarts),
                    age(p.created, now=wall),
                    g.role(p, now=now).value,
                ]
            )
    if len(prows) > 1:
        out += "\n" + columns(prows)
    erows = [["LAST SEEN", "COMPONENT", "NODE", "REASON", "MESSAGE"]]
    for s in report.components:
        for e in s.guard.events:
            erows.append(
                [
                    age(e.time, now=wall),
                    s.component,
                    e.node or "<none>",
                    one_line(e.reason, width=40),
                    one_line(e.message, width=None if wide else MESSAGE_WIDTH),
                ]
            )
    if len(erows) > 1:
        out += "\n" + columns(erows)
    notes = []
    for what, errors in (
        ("guards' Leases", [g.lease_error for g in guards]),
        ("guard Events", [g.events_error for g in guards]),
    ):
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            notes.append(f"{what} not shown: {one_line(error)}\n")
    if notes:
        out += "\n" + "".join(notes)
    return out


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
    return out + guard_tables(report, now=now, wide=wide) + credentials_table(report)


def credentials_table(report: StatusReport) -> str:
    """The client certificates of each Deployment's credentials Secret: days left.
    Nothing when no component runs from a kubehoist Deployment."""
    wall = report.taken_at
    rows = [["COMPONENT", "SECRET", "KEY", "USER", "SUBJECT", "NOT AFTER", "DAYS LEFT"]]
    notes = []
    for s in report.components:
        found = s.credentials
        if s.credentials_error is not None:
            notes.append(f"credentials not shown: {one_line(s.credentials_error)}\n")
        if found is None:
            continue
        for c in found.certs:
            rows.append(
                [
                    s.component,
                    found.secret,
                    c.secret_key,
                    one_line(c.user),
                    one_line(c.subject),
                    f"{c.not_after:%Y-%m-%d %H:%M}",
                    str(c.days_left(wall)),
                ]
            )
    out = "\n" + columns(rows) if len(rows) > 1 else ""
    return out + ("\n" + "".join(dict.fromkeys(notes)) if notes else "")


def credentials_messages(report: StatusReport) -> list[tuple[str, str]]:
    """(level, line) for each certificate close to expiry ("warning") or expired
    ("error"), and each credentials problem ("warning")."""
    out: list[tuple[str, str]] = []
    for s in report.components:
        found = s.credentials
        if found is None:
            continue
        for c in found.certs:
            text = c.message(report.taken_at, component=s.component, secret=found.secret)
            if text is not None:
                out.append((c.level(report.taken_at), one_line(text)))
        out.extend(("warning", one_line(p)) for p in found.problems)
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
    if event.kind == "guard_action":
        return f"{head}: {d.get('action')} by the guard on {d.get('node')}: {d.get('message')}"
    if event.kind == "observing":
        return f"{head}: holder {d.get('pod') or d.get('holder')}, verdict {d.get('verdict')}"
    rest = ", ".join(f"{k}={v}" for k, v in d.items())
    return f"{head}: {rest}" if rest else head
