"""The README's main job: `kubehoist demo` tells the whole story in its own lab."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import pytest

from kubehoist.picture.layout import Box
from tests.e2e.conftest import kubehoist, lab_root
from tests.unit.test_picture_browser import browser_boxes, headless, png_pixels

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
    # In a real browser: it renders (not blank), every text has a size, none overlaps.
    chromium = shutil.which("chromium")
    assert chromium, "scripts/setup installs chromium"
    width, height = float(svg.attrib["width"]), float(svg.attrib["height"])
    png = tmp_path / "demo.png"
    headless(chromium, f"--screenshot={png}", f"--window-size={width:.0f},{height:.0f}",
             picture.as_uri())  # fmt: skip
    w, h, rows = png_pixels(png.read_bytes())
    assert (w, h) == (round(width), round(height))
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), 3)]
    assert sum(p != bytes((255, 255, 255)) for p in pixels) > 0.02 * len(pixels), "blank"
    boxes = browser_boxes(chromium, picture.read_text(), tmp_path)
    assert boxes and all(b["w"] > 0 and b["h"] > 0 for b in boxes), boxes
    real = [Box(b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]) for b in boxes]
    for (i, a), (j, b) in combinations(enumerate(real), 2):
        assert not a.overlaps(b), (boxes[i]["text"], boxes[j]["text"])
