"""The timeline's SVG as a browser draws it: headless Chromium (Debian's `chromium`,
which scripts/setup installs) renders it; the picture is not blank, its bars are where
the SVG says, and no two texts' boxes — as the browser measures them — overlap.

Skips only when chromium is missing and cannot be installed here.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from kubehoist.picture.history import history, parse_lines
from kubehoist.picture.layout import Box
from kubehoist.picture.svg import Drawing, draw
from tests.unit.test_picture import DATA, SVG

LEADER_RGB = (0x2B, 0x6C, 0xB0)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "chromium is not installed"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (
            ["apt-get", "install", "-y", "-qq", "chromium"],
            ["sh", "-c", "apt-get update -qq && apt-get install -y -qq chromium"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if shutil.which("chromium"):
                return str(shutil.which("chromium"))
            reason = f"chromium could not be installed: {proc.stderr.strip()[-300:]}"
    pytest.skip(reason)


def headless(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def drawing() -> Drawing:
    return draw(history(parse_lines(DATA.read_text().splitlines())), title="the lab", width=1000)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(_rgb(line, bpp))
        prev = line
    return width, height, rows


def _rgb(line: bytearray, bpp: int) -> bytes:
    return b"".join(bytes(line[i : i + 3]) for i in range(0, len(line), bpp))


def test_the_screenshot_is_the_picture(chromium: str, tmp_path: Path) -> None:
    d = drawing()
    svg, png = tmp_path / "timeline.svg", tmp_path / "out.png"
    svg.write_text(d.svg())
    size = f"{d.width:.0f},{d.height:.0f}"
    headless(chromium, f"--screenshot={png}", f"--window-size={size}", svg.as_uri())
    width, height, rows = png_pixels(png.read_bytes())
    assert (width, height) == (round(d.width), round(d.height))
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), 3)]
    white = bytes((255, 255, 255))
    inked = sum(p != white for p in pixels)
    assert inked > 0.02 * len(pixels), "the screenshot is (nearly) blank"
    assert len(set(pixels)) > 20
    # the middle of every leader bar is the leader's blue
    root = ET.fromstring(d.svg())
    bars = [el.attrib for el in root.iter(f"{SVG}rect") if el.attrib.get("class") == "leader"]
    for bar in bars:
        x = int(float(bar["x"]) + float(bar["width"]) / 2)
        y = int(float(bar["y"]) + float(bar["height"]) / 2)
        assert tuple(rows[y][3 * x : 3 * x + 3]) == LEADER_RGB, (bar, x, y)


PAGE = """<!doctype html><html><body style="margin:0">{svg}
<pre id="boxes"></pre>
<script>
const boxes = [...document.querySelectorAll('svg text')].map(t => {{
  const b = t.getBBox();
  return {{text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height}};
}});
document.getElementById('boxes').textContent = JSON.stringify(boxes);
</script></body></html>
"""


def browser_boxes(chromium: str, svg: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Each <text>'s getBBox() as Chromium lays it out, read back through --dump-dom."""
    svg = re.sub(r"<title>.*?</title>", "", svg)  # tooltips are no text on the page
    page = tmp_path / "boxes.html"
    page.write_text(PAGE.format(svg=svg))
    dom = headless(chromium, "--dump-dom", "--virtual-time-budget=5000", page.as_uri()).stdout
    found = re.search(r'<pre id="boxes">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), dom[-2000:]
    boxes: list[dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    return boxes


@pytest.mark.parametrize("crowded", [False, True])
def test_no_two_texts_overlap_in_the_browser(chromium: str, tmp_path: Path, crowded: bool) -> None:
    d = drawing()
    if crowded:
        records: list[dict[str, Any]] = [
            {"event": "observing", "t": 0.0, "component": "kube-scheduler", "pod": "s-a"}
        ]
        for i in range(12):
            records.append({"event": "lease_released", "t": 1.0 + i, "component": "kube-scheduler"})
            change = {"lease_gap_s": 0.3, "measured": i % 3 > 0, "pod": f"s-{'ab'[i % 2]}"}
            records.append(
                {"event": "leader_changed", "t": 1.3 + i, "component": "kube-scheduler", **change}
            )
            records.append(
                {"event": "guard_action", "t": 1.1 + i, "component": "kube-scheduler",
                 "action": "Reap", "node": f"cp-{i % 3 + 1}"}
            )  # fmt: skip
        d = draw(history(records), title="crowded", width=600)
    boxes = browser_boxes(chromium, d.svg(), tmp_path)
    assert [b["text"] for b in boxes] == [label.text for label in d.labels]
    for b in boxes:
        assert b["w"] > 0 and b["h"] > 0, b
    real = [Box(b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]) for b in boxes]
    for (i, a), (j, b) in combinations(enumerate(real), 2):
        assert not a.overlaps(b), f"{boxes[i]['text']!r} {a} overlaps {boxes[j]['text']!r} {b}"
    # and the layout's own boxes hold what the browser drew
    for label, box in zip(d.labels, real, strict=True):
        ours = label.box()
        assert ours.x0 - 0.5 <= box.x0 and box.x1 <= ours.x1 + 0.5, (label.text, ours, box)
        assert ours.y0 - 0.5 <= box.y0 and box.y1 <= ours.y1 + 0.5, (label.text, ours, box)
