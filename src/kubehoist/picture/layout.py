"""PURE: where text goes, so that no two labels overlap.

Every label is monospace, so its box is known without a browser: an advance of
`ADVANCE` em a character (DejaVu Sans Mono and Liberation Mono, the fonts Debian's
`monospace` resolves to, advance 0.60–0.61 em) and a line box from `ASCENT` above the
baseline to `DESCENT` below it (the fonts' own ascent and descent, which is what a
browser's getBBox reports). The figures are taken a little large, so the boxes
computed here contain what a browser draws.

`Rows` places labels that belong at an x (a gap's middle, a guard action's instant)
in the first row where they touch nothing already placed, so crowded labels stagger
instead of overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ADVANCE: Final = 0.62
ASCENT: Final = 0.95
DESCENT: Final = 0.26
PAD: Final = 6.0
"""Least horizontal room between two labels in one row."""


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box, *, pad: float = 0.0) -> bool:
        return (
            self.x0 < other.x1 + pad
            and other.x0 < self.x1 + pad
            and self.y0 < other.y1
            and other.y0 < self.y1
        )


@dataclass(frozen=True, kw_only=True)
class Label:
    x: float
    y: float
    """The baseline."""
    text: str
    size: float
    anchor: str = "start"
    """SVG text-anchor: start, middle or end."""
    bold: bool = False
    css: str = ""

    def box(self) -> Box:
        return text_box(self.x, self.y, self.text, size=self.size, anchor=self.anchor)


def text_width(text: str, *, size: float) -> float:
    return len(text) * size * ADVANCE


def line_height(size: float) -> float:
    return (ASCENT + DESCENT) * size


def text_box(x: float, y: float, text: str, *, size: float, anchor: str = "start") -> Box:
    width = text_width(text, size=size)
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return Box(left, y - ASCENT * size, left + width, y + DESCENT * size)


def fit(text: str, *, size: float, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width`."""
    most = int(width / (size * ADVANCE) + 1e-6)
    if len(text) <= most:
        return text
    return text[: max(0, most - 1)] + "…"


class Rows:
    """Labels centred on given x, stacked in rows of `height` between `left` and `right`."""

    def __init__(self, *, left: float, right: float, size: float, height: float) -> None:
        self.left, self.right, self.size, self.height = left, right, size, height
        self.placed: list[list[tuple[float, float]]] = []

    def place(self, x: float, text: str) -> tuple[int, float]:
        """The row for `text` centred on x (kept inside the bounds), and its centre."""
        half = text_width(text, size=self.size) / 2
        centre = min(max(x, self.left + half), self.right - half)
        lo, hi = centre - half, centre + half
        for row, taken in enumerate(self.placed):
            if all(hi + PAD <= a or lo >= b + PAD for a, b in taken):
                taken.append((lo, hi))
                return row, centre
        self.placed.append([(lo, hi)])
        return len(self.placed) - 1, centre

    @property
    def count(self) -> int:
        return len(self.placed)


def nice_step(span: float, *, width: float, label_width: float) -> float:
    """A tick step for `span` seconds over `width` pixels whose labels do not touch."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step / span * width >= label_width + 2 * PAD:
            return float(step)
    return 7200.0


def tick(value: float, *, step: float) -> str:
    """An axis label: whole seconds when the step is whole."""
    if value == 0:
        return "0 s"
    if step >= 120 and step % 60 == 0:
        return seconds(value)
    return f"{value:.0f} s" if step == int(step) else f"{value:.1f} s"


def seconds(value: float) -> str:
    """A figure of seconds as labels show it: 2.8 s, 17 s, 4m05s."""
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    m, s = divmod(round(value), 60)
    return f"{m}m{s:02d}s"
