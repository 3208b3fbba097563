"""The command line: one module per verb, registered here. Modules stay thin:
parse, call the library, print."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from kubehoist import __version__
from kubehoist.errors import KubehoistError


class _Group(click.Group):
    """Turns a `KubehoistError` into `error: <message>` on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KubehoistError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubehoist")
def cli() -> None:
    """Run kube-controller-manager and kube-scheduler as Deployments, safely."""


def _register() -> None:
    from kubehoist.cli import demo, guard, lab, pivot, render, status, watch

    for command in (
        render.command,
        status.command,
        watch.command,
        pivot.pivot,
        pivot.rollback,
        guard.guard,
        lab.lab,
        demo.command,
    ):
        cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="kubehoist")
