"""`kubehoist timeline`: a watch recording read back as spans, and drawn without overlaps."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from kubehoist.cli import cli
from kubehoist.errors import KubehoistError
from kubehoist.picture.history import LEAD, NOT_READY, STANDBY, history, parse_lines
from kubehoist.picture.layout import Box, text_box
from kubehoist.picture.svg import draw

DATA = Path(__file__).parent / "data" / "watch.jsonl"
KCM = "kube-controller-manager"
SCHED = "kube-scheduler"
SVG = "{http://www.w3.org/2000/svg}"


def recorded() -> list[dict[str, Any]]:
    return parse_lines(DATA.read_text().splitlines(), name=str(DATA))


def spans(lane: Any, state: str) -> list[tuple[float, float]]:
    return [(round(s.start, 3), round(s.end, 3)) for s in lane.spans if s.state == state]


def test_the_recording_becomes_lanes_spans_gaps_and_actions() -> None:
    h = history(recorded())
    assert (h.start, h.end, h.started_at) == (0.0, 60.0, "2026-01-01T00:00:00.000Z")
    kcm, sched = h.components
    assert kcm.component == KCM and sched.component == SCHED
    assert list(kcm.lanes) == ["kube-controller-manager-cp-1", "kcm-7d9f-abcde", "kcm-7d9f-fghij"]
    static, first, second = kcm.lanes.values()
    assert (static.node, static.kind) == ("cp-1", "static")
    assert spans(static, LEAD) == [(0.0, 25.0)]  # until the gap the watch measured began
    assert spans(static, STANDBY) == [(0.0, 26.0)]  # the pod went at 26
    assert spans(first, LEAD) == [(27.9, 40.0)]  # released at 40
    assert spans(first, STANDBY) == [(0.0, 60.0)]
    assert spans(second, NOT_READY) == [(0.0, 4.0)]
    assert spans(second, STANDBY) == [(4.0, 60.0)]
    assert spans(second, LEAD) == [(40.6, 60.0)]
    assert [(round(g.start, 3), g.end, g.measured, g.open) for g in kcm.gaps] == [
        (25.0, 27.9, True, False),  # lease_gap_s 2.9
        (40.0, 40.6, False, False),
    ]
    assert [(a.at, a.action, a.node) for a in kcm.actions] == [
        (28.0, "Reap", "cp-2"),
        (28.3, "Fallback", "cp-3"),
        (41.0, "HandBack", "cp-3"),
    ]
    assert [(g.start, g.end, g.open) for g in sched.gaps] == [(50.0, 60.0, True)]
    assert spans(sched.lanes["kube-scheduler-cp-1"], LEAD) == [(0.0, 50.0)]


def test_bad_lines_name_the_file_and_line() -> None:
    with pytest.raises(KubehoistError, match=r"rec.jsonl:2: not JSON"):
        parse_lines(['{"t": 0}', "{oops"], name="rec.jsonl")
    with pytest.raises(KubehoistError, match=r"rec.jsonl:1: not a watch event"):
        parse_lines(['{"event": "observing"}'], name="rec.jsonl")
    with pytest.raises(KubehoistError, match="empty"):
        history([])


def boxes(root: ET.Element) -> list[tuple[str, Box]]:
    """Every <text> of the SVG with its box, computed from its attributes alone."""
    out = []
    for el in root.iter(f"{SVG}text"):
        box = text_box(
            float(el.attrib["x"]),
            float(el.attrib["y"]),
            el.text or "",
            size=float(el.attrib["font-size"]),
            anchor=el.attrib.get("text-anchor", "start"),
        )
        out.append((el.text or "", box))
    return out


def assert_no_overlap(svg: str) -> list[tuple[str, Box]]:
    root = ET.fromstring(svg)
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    found = boxes(root)
    for (a, box_a), (b, box_b) in combinations(found, 2):
        assert not box_a.overlaps(box_b), f"{a!r} {box_a} overlaps {b!r} {box_b}"
    for text, box in found:
        assert box.x0 >= 0 and box.y0 >= 0, text
        assert box.x1 <= width and box.y1 <= height, text
    return found


def rects(root: ET.Element, css: str) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in el.attrib.items() if k in ("x", "y", "width", "height")}
        for el in root.iter(f"{SVG}rect")
        if el.attrib.get("class") == css
    ]


def test_the_svg_has_a_lane_per_candidate_bars_gaps_and_labels() -> None:
    svg = draw(history(recorded()), title="election", width=1100).svg()
    root = ET.fromstring(svg)
    texts = [t for t, _ in assert_no_overlap(svg)]
    for lane in (
        "kube-controller-manager-cp-1 (cp-1)",
        "kcm-7d9f-abcde (w-1)",
        "kcm-7d9f-fghij (w-2)",
        "kube-scheduler-cp-1 (cp-1)",
    ):
        assert texts.count(lane) == 1
    assert texts.count("guard") == 1  # only kube-controller-manager's guards acted
    assert {"gap 2.9 s", "gap ~0.6 s", "no leader ≥ 10 s"} <= set(texts)
    assert {"Reap cp-2", "Fallback cp-3", "HandBack cp-3"} <= set(texts)
    assert {KCM, SCHED, "0 s", "60 s"} <= set(texts)
    leaders = rects(root, "leader")
    assert len(leaders) == 4 + 1  # four spans, and the legend's swatch
    gaps = sorted(rects(root, "gap"), key=lambda r: r["x"])[1:]  # without the swatch
    assert len(gaps) == 3
    # one scale for all: the 2.9 s gap is 2.9/0.6 times as wide as the 0.6 s one
    assert gaps[0]["width"] / gaps[1]["width"] == pytest.approx(2.9 / 0.6, rel=0.01)
    # the gap band starts where the first leader's bar ends
    first = min(leaders[1:], key=lambda r: r["x"] + r["width"])
    assert first["x"] + first["width"] == pytest.approx(gaps[0]["x"], abs=0.2)
    assert len(list(root.iter(f"{SVG}path"))) == 3  # a marker per guard action


def test_crowded_labels_are_staggered_into_rows() -> None:
    # ten short gaps a second apart: their labels cannot share one row
    records: list[dict[str, Any]] = [
        {"event": "observing", "t": 0.0, "component": KCM, "pod": "a", "candidates": ["a", "b"]}
    ]
    for i in range(10):
        t = 1.0 + i
        pod = "b" if i % 2 == 0 else "a"
        records.append({"event": "lease_released", "t": t, "component": KCM, "pod": pod})
        gap = {"lease_gap_s": 0.4, "measured": True, "pod": pod}
        records.append({"event": "leader_changed", "t": t + 0.4, "component": KCM, **gap})
    svg = draw(history(records), title="crowded", width=700).svg()
    found = assert_no_overlap(svg)
    rows = {box.y0 for text, box in found if text.startswith("gap ")}
    assert len([t for t, _ in found if t == "gap 0.4 s"]) == 10
    assert len(rows) >= 2


events = st.lists(
    st.tuples(
        st.sampled_from(["leader_changed", "lease_expired", "guard_action", "candidate_added"]),
        st.floats(min_value=0, max_value=600, allow_nan=False),
        st.sampled_from(["kcm-a", "kcm-bbbbbbbbbb", "kube-controller-manager-cp-1", "x"]),
        st.floats(min_value=0, max_value=30, allow_nan=False),
        st.sampled_from(["Fallback", "HandBack", "Reap"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(events, st.integers(min_value=500, max_value=1600))
def test_no_two_labels_ever_overlap(
    items: list[tuple[str, float, str, float, str]], width: int
) -> None:
    records: list[dict[str, Any]] = []
    for kind, t, pod, gap, action in items:
        r: dict[str, Any] = {"event": kind, "t": t, "component": KCM, "pod": pod, "node": "cp-1"}
        r |= {"lease_gap_s": gap, "measured": gap < 10, "action": action, "ready": True}
        records.append(r)
    assert_no_overlap(draw(history(records), title="any", width=width).svg())


def test_the_verb_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "timeline.svg"
    result = CliRunner().invoke(cli, ["timeline", str(DATA), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out}: 4 candidate(s), 3 gap(s), 3 guard action(s)\n"
    assert ET.parse(out).getroot().tag == f"{SVG}svg"
    only = CliRunner().invoke(cli, ["timeline", str(DATA), "-c", "scheduler", "-o", "-"])
    assert only.exit_code == 0
    assert "kcm-7d9f" not in only.output and "kube-scheduler-cp-1" in only.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"t": 0, "component": KCM}) + "\nnot json\n")
    result = CliRunner().invoke(cli, ["timeline", str(bad)])
    assert result.exit_code == 1
    assert result.stderr == f"error: {bad}:2: not JSON: Expecting value\n"


def test_a_holder_that_stopped_renewing_is_drawn_as_silence() -> None:
    """A crash without the reaper: the Lease named the dead leader for 14.5 s, then a
    standby took it with no gap. The old leader's bar ends at its last renewal."""
    records = [
        {"event": "observing", "t": 0.0, "component": "kcm", "pod": "a", "candidates": ["a", "b"]},
        {
            "event": "leader_changed", "t": 20.0, "component": "kcm", "pod": "b",
            "previous_pod": "a", "lease_gap_s": 0.0, "since_last_renew_s": 14.5,
        },
    ]  # fmt: skip
    (c,) = history(records).components
    assert [(q.start, q.end) for q in c.silences] == [(5.5, 20.0)]
    assert c.gaps == []
    lead_a = [s for s in c.lanes["a"].spans if s.state == "leader"]
    assert [(s.start, s.end) for s in lead_a] == [(0.0, 5.5)]
    svg = draw(history(records), title="t", width=900).svg()
    assert "no renewal 14 s" in svg  # (labels: whole seconds from 10 s on)
