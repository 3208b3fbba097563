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
    from kubehoist.cli import lab

    cli.add_command(lab.lab)
    for name in ("render", "status", "watch"):
        try:
            module = __import__(f"kubehoist.cli.{name}", fromlist=["command"])
        except ModuleNotFoundError as exc:  # a verb still being written
            if exc.name != f"kubehoist.cli.{name}":
                raise
            continue
        cli.add_command(module.command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="kubehoist")
