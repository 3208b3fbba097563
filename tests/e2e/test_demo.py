"""The README's main job: `kubehoist demo` tells the whole story in its own lab."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.conftest import kubehoist, lab_root

pytestmark = pytest.mark.lab


def test_demo_runs_the_story_end_to_end(tmp_path: Path) -> None:
    root = (lab_root().parent / "demo").resolve()
    picture = tmp_path / "demo.svg"
    out = kubehoist(
        "demo", "--root", str(root), "--host-port", "16943", "--workers", "2",
        "--picture", str(picture),
    )  # fmt: skip
    text = out.stdout
    for figure in (
        "pivot, end to end",
        "release → a Deployment pod leads",
        "scale 2 → 3, until 3 Ready",
        "failover after a crash",
        "circular dependency",
        "guard installed → its fallback static pod leads",
        "handed back, a pod leads",
        "failover after a crash, with the reaper",
        "rollback, until a static pod leads",
    ):
        assert figure in text, figure
    assert "controllers are down for good" in text
    assert "the guard reaped" in text  # observed (its GuardReap Event), not assumed
    assert "runs from its static pods again" in text
    assert not root.exists()  # the demo's lab is gone
    # The run drew its own timeline from its `watch` record: the Deployment's pods and the
    # static pod led in turn, the guard acted (fallback, hand-back, reap).
    svg = ET.parse(picture).getroot()
    text = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "kube-controller" in text and "gap" in text, text
    records = [json.loads(line) for line in picture.with_suffix(".jsonl").read_text().splitlines()]
    actions = {r.get("action") for r in records if r.get("event") == "guard_action"}
    assert {"Fallback", "HandBack", "Reap"} <= actions, actions
