"""`kubehoist lab leaders`: who led when, from the lab's container logs, whether two
instances ever led at once, and whether a guard ever fell back while one led or
reaped a live holder (exit 1 if so; a frozen leader's overlap is shown, not counted)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from kubehoist.cli.options import prog
from kubehoist.components import COMPONENTS
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.lab import instances, leaders, oracle
from kubehoist.lab import spec as specmod

ALIASES = {"kcm": "kube-controller-manager", "scheduler": "kube-scheduler"}


def _root_option(f: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KUBEHOIST_LAB_ROOT",
        default=specmod.DEFAULT_ROOT,
        help="Lab root directory [env KUBEHOIST_LAB_ROOT; default /var/lib/kubehoist/lab].",
    )(f)


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def render_table(report: leaders.LeaderReport) -> list[str]:
    lines = [
        f"{report.component}: lease {report.lease}, {len(report.intervals)} lead interval(s) "
        f"in {len(report.instances)} instance(s) under {report.root} (times UTC)"
    ]
    if not report.intervals:
        return [*lines, "  nobody led (no 'Successfully acquired lease' line)"]
    rows = [("INSTANCE (POD/NODE/RESTART)", "ACQUIRED", "LED UNTIL", "HELD", "ENDED BY")]
    for i in report.intervals:
        held = f"{i.seconds:.1f}s" + ("+" if i.still_leading else "")
        rows.append((i.instance.name, _time(i.acquired), _time(i.until), held, i.describe_end()))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        lines.append("  " + "  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4])
    led = {i.instance.name for i in report.intervals}
    others = sum(1 for i in report.instances if i.name not in led)
    if others:
        lines.append(f"  {others} other instance(s) never led")
    return lines


@click.command("leaders")
@_root_option
@click.option(
    "-c",
    "--component",
    default=instances.DEFAULT_COMPONENT,
    show_default=True,
    help="kube-controller-manager (kcm) or kube-scheduler (scheduler).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=leaders.DEFAULT_TOLERANCE_S,
    show_default=True,
    help=(
        f"Seconds two leaders may overlap before it counts: the measurement error "
        f"({leaders.TOLERANCE_MS} ms; see kubehoist.lab.leaders.TOLERANCE_MS)."
    ),
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def leaders_command(root: Path, component: str, tolerance: float, output: str) -> None:
    """Lead intervals of every instance of a component, from the lab's container logs
    and state files; exit 1 if two instances led at once."""
    name = ALIASES.get(component, component)
    if name not in COMPONENTS:
        known = ", ".join([*COMPONENTS, *ALIASES])
        raise UsageError(f"unknown component {component!r} (known: {known})")
    root = root.resolve()
    if not (root / "lab.json").exists():
        raise KubehoistError(f"no lab at {root} (run `{prog()} lab up --root {root}`)")
    try:
        judged = oracle.judge(root, name, tolerance=tolerance)
    except instances.LeadersError as exc:
        raise KubehoistError(str(exc)) from exc
    report = judged.leaders
    if output == "json":
        click.echo(json.dumps(judged.to_json(), indent=2))
    else:
        for line in render_table(report):
            click.echo(line)
        for overlap in report.overlaps:
            click.echo(f"  OVERLAP {overlap.describe()}")
        for overlap in report.frozen:
            click.echo(f"  FROZEN LEADER {overlap.describe()}")
        for violation in judged.violations:
            click.echo(f"  GUARD {violation.kind}: {violation.text}")
    for warning in [*report.warnings, *judged.warnings]:
        click.echo(f"warning: {warning}", err=True)
    if report.overlaps:
        worst = max(report.overlaps, key=lambda o: o.seconds)
        raise KubehoistError(
            f"{name}: two leaders at once ({len(report.overlaps)} overlap(s) beyond "
            f"{tolerance * 1000:g} ms; longest: {worst.describe()})"
        )
    if judged.violations:
        first = judged.violations[0]
        raise KubehoistError(
            f"{name}: {len(judged.violations)} guard violation(s); first: {first.text}"
        )
