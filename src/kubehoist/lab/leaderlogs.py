"""What a component's log says about leader election. An archived log is in the CRI
format (`<RFC3339Nano> <stream> <P|F> <line>`): `read_cri_log` gives its lines, each
at containerd's time (UTC), partial (`P`) fragments joined. After the CRI prefix is
klog text (`parse_klog`, `split_message`), and among it client-go's leader election
lines for one Lease (`classify`): acquired, failed to renew, lost, stopped leading,
became leader, in both client-go's structured messages (since v1.30) and the older
unstructured ones. `scan_log` gives one instance's `Event`s and the time of its last
line, from which `kubehoist.lab.leaders` builds its lead intervals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from kubehoist.lab.logarchive import parse_cri_line

ACQUIRED: Final = "acquired"
RENEW_FAILED: Final = "failed to renew lease"
LOST: Final = "leaderelection lost"
STOPPED: Final = "stopped leading"
BECAME: Final = "became leader"
"""client-go's LeaderElection event `<identity> became leader`: the instance's
identity on the Lease (how a guard's Reap names its holder)."""

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
