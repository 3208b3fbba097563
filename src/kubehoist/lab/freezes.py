"""The lab's freeze journal (`FREEZES`): which container's process was stopped
(SIGSTOP) when, and resumed (SIGCONT) when. Whoever sends the signals appends to it
(`bench/chaos.py`, through `record_freeze`); `kubehoist.lab.leaders` reads it (a
frozen leader's overlap is client-go's allowance, not two leaders), and so does
`kubehoist.lab.oracle`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from kubehoist.lab.instances import LeadersError, iso, parse_time

FREEZES: Final = Path("faults/freezes.jsonl")
"""The lab's freeze journal under its root: one JSON object a line, `containerID`,
`node`, `pod`, `stopped` (RFC 3339, UTC) and `resumed` (null until it is); the last
line for a (containerID, stopped) pair wins."""


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
            "stopped": iso(self.stopped),
            "resumed": iso(self.resumed),
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
        stopped = parse_time(doc["stopped"], path)
        assert stopped is not None
        freeze = Freeze(
            container_id=str(doc["containerID"]),
            stopped=stopped,
            resumed=parse_time(doc.get("resumed"), path),
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
