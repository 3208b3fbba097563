"""The phase runner: named phases run in order, each skippable by name, each with a
dry run that says what it would do, progress shown as a phase list.

Phases are thin: they call the domain modules (render, parking, handover). Each is
idempotent, so a resumed run simply runs again the phases not recorded as done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.console import Console

from kubehoist.errors import KubehoistError

C = TypeVar("C")


@dataclass(frozen=True)
class Phase(Generic[C]):
    name: str
    summary: str
    run: Callable[[C], str]
    """Does the work; returns one line saying what was done."""
    plan: Callable[[C], Sequence[str]]
    """What `run` would do, one line each, changing nothing (for --dry-run)."""


class Progress:
    """Phase lines on stderr: with a spinner on a terminal, plain lines otherwise."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.tty = sys.stderr.isatty()
        self.quiet = quiet

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, soft_wrap=True)


def run_phases(
    phases: Sequence[Phase[C]],
    ctx: C,
    *,
    skip: Sequence[str] = (),
    done: Sequence[str] = (),
    dry_run: bool = False,
    progress: Progress,
    on_done: Callable[[str, str], None] | None = None,
) -> list[tuple[str, float, str]]:
    """Run (or, with dry_run, describe) the phases. Returns (phase, seconds, result)."""
    names = [p.name for p in phases]
    for name in skip:
        if name not in names:
            raise KubehoistError(
                f"--skip-phases: unknown phase {name!r} (phases: {', '.join(names)})"
            )
    results: list[tuple[str, float, str]] = []
    total = len(phases)
    for i, phase in enumerate(phases, start=1):
        tag = f"[{i}/{total}] {phase.name}"
        if phase.name in skip:
            progress.line(f"{tag}: skipped (--skip-phases)")
            continue
        if dry_run:
            progress.line(f"{tag}: {phase.summary}")
            for what in phase.plan(ctx):
                progress.line(f"    would {what}")
            continue
        if phase.name in done:
            progress.line(f"{tag}: done in an earlier run; checking again")
        start = time.monotonic()
        if progress.tty and not progress.quiet:
            with progress.console.status(f"{tag}: {phase.summary}"):
                result = phase.run(ctx)
        else:
            progress.line(f"{tag}: {phase.summary}")
            result = phase.run(ctx)
        took = time.monotonic() - start
        progress.line(f"{tag}: {result} ({took:.1f}s)")
        results.append((phase.name, took, result))
        if on_done is not None:
            on_done(phase.name, result)
    return results
