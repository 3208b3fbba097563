"""`kubehoist timeline FILE -o timeline.svg`: a `watch --output jsonl` recording drawn.

Thin: read the records, `picture.history`, `picture.svg.draw`, write the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kubehoist.cli.options import resolve_components
from kubehoist.errors import KubehoistError
from kubehoist.picture.history import history, parse_lines
from kubehoist.picture.svg import draw


@click.command("timeline")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="timeline.svg",
    show_default=True,
    help="Where to write the SVG ('-': stdout).",
)
@click.option(
    "-c",
    "--component",
    "components",
    multiple=True,
    help="Draw only this component (kcm and scheduler accepted; repeatable).",
)
@click.option(
    "--width",
    type=click.IntRange(min=500, max=10000),
    default=1100,
    show_default=True,
    help="Width of the picture in pixels.",
)
@click.option("--title", help="The picture's title (default: from the file and components).")
def command(
    file: str, output: str, components: tuple[str, ...], width: int, title: str | None
) -> None:
    """Draw FILE, what `watch --output jsonl` wrote, as an SVG timeline of the election:
    per candidate pod when it led and stood by, the gaps with no leader with their
    measured length, and the guards' actions."""
    name = "<stdin>" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise KubehoistError(f"cannot read {file}: {exc.strerror}") from None
    records = parse_lines(text.splitlines(), name=name)
    if components:
        wanted = {c.name for c in resolve_components(components)}
        records = [r for r in records if r.get("component") in wanted]
    h = history(records)
    if not h.components:
        raise KubehoistError(f"{name}: no component's events to draw")
    names = ", ".join(c.component for c in h.components)
    drawing = draw(h, title=title or f"{names}: leader election ({Path(name).name})", width=width)
    svg = drawing.svg()
    if output == "-":
        sys.stdout.write(svg)
        return
    try:
        Path(output).write_text(svg)
    except OSError as exc:
        raise KubehoistError(f"cannot write {output}: {exc.strerror}") from None
    lanes = sum(len(c.lanes) for c in h.components)
    gaps = sum(len(c.gaps) for c in h.components)
    actions = sum(len(c.actions) for c in h.components)
    click.echo(f"wrote {output}: {lanes} candidate(s), {gaps} gap(s), {actions} guard action(s)")
