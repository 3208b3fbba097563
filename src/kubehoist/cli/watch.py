"""`kubehoist watch [COMPONENT…]`: the election as it happens.

Thin: options -> `kubehoist.follow.follow` -> a rich live view on a terminal, one
human line per event otherwise, or `--output jsonl` (one JSON object per line; field
names are stable, see docs/status.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kubehoist import kube
from kubehoist.cli.options import cluster_options, resolve_components
from kubehoist.follow import follow
from kubehoist.kube.transport import stderr_echo
from kubehoist.timeline import Event, Timeline, validity_text
from kubehoist.views import age, event_line, leader_label

_KEEP_EVENTS = 12


@click.command("watch")
@click.argument("components", nargs=-1, metavar="[COMPONENT]...")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["jsonl", "text", "live"]),
    help="jsonl: one JSON event per line; text: one line per event; "
    "live: a view that updates (the default on a terminal).",
)
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (default: until interrupted).",
)
@cluster_options
def command(
    components: tuple[str, ...],
    output: str | None,
    duration: float | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    verbose: int,
) -> None:
    """Follow leader changes, lease gaps and candidates as they happen."""
    chosen = resolve_components(components)
    mode = output or ("live" if sys.stdout.isatty() else "text")
    where = kube.target(
        kubeconfig=kubeconfig,
        context=context,
        log=kube.RequestLog(echo=stderr_echo if verbose else None),
    )
    timeline = Timeline([c.name for c in chosen])
    origin = time.monotonic()
    recent: deque[str] = deque(maxlen=_KEEP_EVENTS)

    def emit(event: Event) -> None:
        if mode == "jsonl":
            sys.stdout.write(json.dumps(event.to_json(origin=origin)) + "\n")
            sys.stdout.flush()
        elif mode == "text":
            sys.stdout.write(event_line(event, origin=origin) + "\n")
            sys.stdout.flush()
        else:
            recent.append(event_line(event, origin=origin))

    async def run() -> None:
        async with kube.open_api(where) as api:
            task = follow(api, components=chosen, namespace=namespace, emit=emit, timeline=timeline)
            if mode != "live":
                await _bounded(task, duration)
                return
            console = Console()
            with Live(
                _view(timeline, recent), console=console, refresh_per_second=4, transient=False
            ) as live:

                async def refresh() -> None:
                    while True:
                        live.update(_view(timeline, recent))
                        await asyncio.sleep(0.25)

                refresher = asyncio.create_task(refresh())
                try:
                    await _bounded(task, duration)
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher

    asyncio.run(run())


async def _bounded(coro: Coroutine[Any, Any, None], duration: float | None) -> None:
    if duration is None:
        await coro
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(coro, timeout=duration)


def _view(timeline: Timeline, recent: deque[str]) -> Group:
    now = time.monotonic()
    wall = datetime.now(UTC)
    parts: list[RenderableType] = []
    if not timeline.started:
        parts.append(Text("listing…", style="dim"))
    for component in timeline.components:
        a = timeline.assessment(component, now=now)
        obs = timeline.observation(component)
        style = "green" if a.verdict.value == "Healthy" else "yellow"
        holder = leader_label(a.leader) if a.leader else (obs.lease.holder if obs else None)
        title = Text.assemble(
            (component, "bold"),
            "  ",
            (a.verdict.value, style),
            f"  holder: {holder or '<none>'}  lease: {validity_text(obs, now=now)}",
            ("  (stream interrupted)" if timeline.blind(component) else "", "red"),
        )
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("CANDIDATE", "KIND", "NODE", "READY", "RESTARTS", "AGE", "ROLE"):
            table.add_column(col)
        for c in timeline.candidates(component):
            role = a.role(c.name)
            table.add_row(
                c.name,
                c.kind.value,
                c.node or "<none>",
                "True" if c.ready else "False",
                str(c.restarts),
                age(c.created, now=wall),
                role.value if role else "-",
            )
        parts += [title, table, Text("")]
    parts.append(Text("events", style="bold"))
    parts += [Text(line) for line in recent]
    return Group(*parts)
