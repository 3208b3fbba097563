"""PURE: a `History` drawn as SVG, by hand (no plotting library, no browser).

One section per component: a lane per candidate pod with bars for when it led, stood
by (Ready) and was there but not Ready; red bands over the lanes where nobody led,
each labelled with its length in rows above the lanes; a lane of the guards' actions
with their labels in rows below it; one time axis for all, in seconds since the
watch started. Labels that would collide go to the next row (`layout.Rows`), so no
two texts overlap; `Drawing.labels` holds every text with its box for checking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from xml.sax.saxutils import escape

from kubehoist.picture.history import (
    LEAD,
    NOT_READY,
    STANDBY,
    ComponentHistory,
    Gap,
    History,
)
from kubehoist.picture.layout import (
    ASCENT,
    DESCENT,
    Label,
    Rows,
    fit,
    line_height,
    nice_step,
    seconds,
    text_width,
    tick,
)

SIZE: Final = 12.0
TITLE_SIZE: Final = 14.0
MARGIN: Final = 12.0
ROW: Final = line_height(SIZE) + 4
LANE: Final = 24.0
BAR: Final = 14.0
CSS: Final = """
text { font-family: 'DejaVu Sans Mono', 'Liberation Mono', monospace; fill: #1a202c; }
.bg { fill: #ffffff; }
.leader { fill: #2b6cb0; }
.standby { fill: #9ae6b4; }
.notready { fill: #edf2f7; stroke: #a0aec0; stroke-dasharray: 3 2; }
.gap { fill: #e53e3e; fill-opacity: 0.18; stroke: #c53030; stroke-width: 0.5; }
.silent { fill: #dd6b20; fill-opacity: 0.12; stroke: #c05621; stroke-width: 0.5;
  stroke-dasharray: 4 2; }
.tick { stroke: #c53030; stroke-width: 1; }
.guard { fill: #d69e2e; stroke: #975a16; }
.grid { stroke: #e2e8f0; stroke-width: 1; }
.axis { stroke: #4a5568; stroke-width: 1; }
.lane { fill: #f7fafc; }
.dim { fill: #4a5568; }
"""
_CLASS: Final = {LEAD: "leader", STANDBY: "standby", NOT_READY: "notready"}


@dataclass
class Drawing:
    width: float
    height: float = 0.0
    labels: list[Label] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    """SVG elements other than text, in drawing order."""

    def text(self, label: Label, *, tooltip: str | None = None) -> None:
        self.labels.append(label)
        attrs = (
            f'x="{label.x:.1f}" y="{label.y:.1f}" font-size="{label.size:g}"'
            f' text-anchor="{label.anchor}"'
            + (' font-weight="bold"' if label.bold else "")
            + (f' class="{label.css}"' if label.css else "")
        )
        inner = escape(label.text) + (f"<title>{escape(tooltip)}</title>" if tooltip else "")
        self.shapes.append(f"<text {attrs}>{inner}</text>")

    def rect(
        self, x: float, y: float, w: float, h: float, css: str, tooltip: str | None = None
    ) -> None:
        title = f"<title>{escape(tooltip)}</title>" if tooltip else ""
        self.shapes.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.0):.1f}" height="{h:.1f}"'
            f' class="{css}">{title}</rect>'
        )

    def line(self, x0: float, y0: float, x1: float, y1: float, css: str) -> None:
        self.shapes.append(
            f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" class="{css}"/>'
        )

    def svg(self) -> str:
        w, h = f"{self.width:g}", f"{self.height:.0f}"
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"'
            f' viewBox="0 0 {w} {h}">'
        )
        body = "\n".join(self.shapes)
        bg = '<rect class="bg" width="100%" height="100%"/>'
        return f"{head}\n<style>{CSS}</style>\n{bg}\n{body}\n</svg>\n"


def silence_text(q: Gap) -> str:
    return f"no renewal {seconds(q.seconds)}"


def gap_text(gap: Gap) -> str:
    figure = seconds(gap.seconds)
    if gap.open:
        return f"no leader ≥ {figure}"
    return f"gap {'~' if not gap.measured else ''}{figure}"


def draw(history: History, *, title: str, width: float = 1100.0) -> Drawing:
    d = Drawing(width=width)
    lanes = [lane.label for c in history.components for lane in c.lanes.values()]
    widest = max([text_width(x, size=SIZE) for x in [*lanes, "guard"]])
    column = min(widest, width * 0.4) + 16
    left, right = MARGIN + column, width - 3 * MARGIN
    span = max(history.end - history.start, 1e-3)

    def x_of(t: float) -> float:
        t = min(max(t, history.start), history.end)
        return left + (t - history.start) / span * (right - left)

    y = MARGIN
    d.text(
        Label(
            x=MARGIN,
            y=y + ASCENT * TITLE_SIZE,
            text=fit(title, size=TITLE_SIZE, width=width - 2 * MARGIN),
            size=TITLE_SIZE,
            bold=True,
        )
    )
    y += line_height(TITLE_SIZE) + 8
    y = _legend(d, y)
    top = y
    grid_at = len(d.shapes)
    for component in history.components:
        y = _section(d, component, y=y, left=left, right=right, x_of=x_of, column=column)
    # the time axis, and its grid behind everything below the legend
    widest_tick = text_width(tick(span, step=1.0), size=SIZE)
    step = nice_step(span, width=right - left, label_width=widest_tick + 8)
    ticks = [history.start + i * step for i in range(int(span / step + 1e-9) + 1)]
    y += 6
    grid = Drawing(width=width)
    for t in ticks:
        grid.line(x_of(t), top, x_of(t), y, "grid")
    d.shapes[grid_at:grid_at] = grid.shapes
    d.line(left, y, right, y, "axis")
    for t in ticks:
        d.line(x_of(t), y, x_of(t), y + 4, "axis")
        label = tick(t - history.start, step=step)
        d.text(Label(x=x_of(t), y=y + 6 + ASCENT * SIZE, text=label, size=SIZE, anchor="middle"))
    y += 6 + ROW
    caption = "seconds since the watch started"
    if history.started_at:
        caption += f" ({history.started_at})"
    d.text(
        Label(
            x=right,
            y=y + ASCENT * SIZE,
            text=fit(caption, size=SIZE, width=right - left),
            size=SIZE,
            anchor="end",
            css="dim",
        )
    )
    d.height = y + ROW + MARGIN
    return d


def _legend(d: Drawing, y: float) -> float:
    items = [
        ("leader", "leader"),
        ("standby", "standby (Ready)"),
        ("notready", "not Ready"),
        ("gap", "no leader (lease gap; ~ not fully observed)"),
        ("silent", "holder not renewing (its Lease not yet expired)"),
        ("guard", "guard action"),
    ]
    x = MARGIN
    for css, text in items:
        need = 16 + text_width(text, size=SIZE) + 18
        if x + need > d.width - MARGIN and x > MARGIN:
            x, y = MARGIN, y + ROW
        d.rect(x, y + 2, 12, 12, css)
        d.text(Label(x=x + 16, y=y + 2 + ASCENT * SIZE - 2, text=text, size=SIZE))
        x += need
    return y + ROW + 6


def _section(
    d: Drawing,
    c: ComponentHistory,
    *,
    y: float,
    left: float,
    right: float,
    x_of: Callable[[float], float],
    column: float,
) -> float:
    y += 8
    d.text(Label(x=MARGIN, y=y + ASCENT * SIZE, text=c.component, size=SIZE, bold=True))
    y += ROW + 2
    # gap labels: rows above the lanes
    rows = Rows(left=left, right=d.width - MARGIN, size=SIZE, height=ROW)
    placed = [
        (gap, *rows.place((x_of(gap.start) + x_of(gap.end)) / 2, gap_text(gap))) for gap in c.gaps
    ]
    quiet = [
        (q, *rows.place((x_of(q.start) + x_of(q.end)) / 2, silence_text(q))) for q in c.silences
    ]
    labels = [
        (gap_text(g), row, centre, f"no valid leader from t={g.start:.3f} to t={g.end:.3f}"
         + ("" if g.measured else " (not fully observed)"))
        for g, row, centre in placed
    ] + [
        (silence_text(q), row, centre,
         f"the holder's last renewal at t={q.start:.3f}; its Lease ran on to t={q.end:.3f}")
        for q, row, centre in quiet
    ]  # fmt: skip
    for text, row, centre, tooltip in labels:
        d.text(
            Label(x=centre, y=y + row * ROW + ASCENT * SIZE, text=text, size=SIZE, anchor="middle"),
            tooltip=tooltip,
        )
    y += rows.count * ROW
    lanes_top = y + (4 if rows.count else 0)
    y = lanes_top
    for lane in c.lanes.values():
        d.rect(left, y + 1, right - left, LANE - 2, "lane")
        d.text(
            Label(
                x=MARGIN,
                y=_lane_baseline(y),
                text=fit(lane.label, size=SIZE, width=column - 16),
                size=SIZE,
            ),
            tooltip=f"{lane.key} ({lane.kind or 'unknown kind'} on {lane.node or 'unknown node'})",
        )
        for s in sorted(lane.spans, key=lambda s: s.state == LEAD):  # leaders on top
            height = BAR if s.state == LEAD else BAR - 6
            x0 = x_of(s.start)
            d.rect(
                x0,
                y + (LANE - height) / 2,
                max(x_of(s.end) - x0, 1.0),
                height,
                _CLASS[s.state],
                tooltip=f"{lane.key}: {s.state} from t={s.start:.3f} to t={s.end:.3f}",
            )
        y += LANE
    for q, _row, _centre in quiet:
        x0, x1 = x_of(q.start), x_of(q.end)
        d.rect(x0, lanes_top, max(x1 - x0, 2.0), y - lanes_top, "silent")
    for gap, _row, _centre in placed:
        x0, x1 = x_of(gap.start), x_of(gap.end)
        mid = (x0 + x1) / 2
        d.rect(x0, lanes_top, max(x1 - x0, 2.0), y - lanes_top, "gap")
        d.line(mid, lanes_top - 4, mid, lanes_top, "tick")
    if not c.actions:
        return y
    d.text(Label(x=MARGIN, y=_lane_baseline(y), text="guard", size=SIZE))
    mid = y + LANE / 2
    for a in c.actions:
        x = x_of(a.at)
        d.shapes.append(
            f'<path d="M {x:.1f} {mid - 6:.1f} L {x + 6:.1f} {mid:.1f} L {x:.1f} {mid + 6:.1f}'
            f' L {x - 6:.1f} {mid:.1f} Z" class="guard"><title>{escape(a.message)}</title></path>'
        )
    y += LANE
    rows = Rows(left=left, right=d.width - MARGIN, size=SIZE, height=ROW)
    for a in c.actions:
        text = f"{a.action} {a.node}" if a.node else a.action
        row, centre = rows.place(x_of(a.at), text)
        d.text(
            Label(x=centre, y=y + row * ROW + ASCENT * SIZE, text=text, size=SIZE, anchor="middle"),
            tooltip=f"t={a.at:.3f}: {a.message}",
        )
    return y + rows.count * ROW


def _lane_baseline(top: float) -> float:
    """The baseline that centres a label's line box in the lane starting at `top`."""
    return top + LANE / 2 + (ASCENT - DESCENT) * SIZE / 2
