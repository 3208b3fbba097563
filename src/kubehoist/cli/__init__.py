"""The command line: one module per verb, registered here. Modules stay thin:
parse, call the library, print.

Two entry points run the same group: `kubehoist` and `kubectl-hoist` (kubectl's plugin
name, so that `kubectl hoist …` works); each passes its own program name so that usage
lines, errors and `--version` say what the user typed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Final

import click

from kubehoist import __version__
from kubehoist.errors import KubehoistError
from kubehoist.lab.spec import KUBERNETES_VERSION

PROG: Final = "kubehoist"
KUBECTL_PROG: Final = "kubectl hoist"
TESTED_KUBERNETES: Final = (KUBERNETES_VERSION,)
"""The Kubernetes versions the end-to-end tests run against: the lab's."""


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
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _version(ctx) if value else None,
    help="Show the version, the Kubernetes versions it was tested with, and exit.",
)
def cli() -> None:
    """Run kube-controller-manager and kube-scheduler as Deployments, safely."""


def _version(ctx: click.Context) -> None:
    # click's version_option keeps the first program name it sees: ours asks every time
    tested = ", ".join(TESTED_KUBERNETES)
    click.echo(f"{ctx.find_root().info_name} {__version__} (tested with Kubernetes {tested})")
    ctx.exit()


def _register() -> None:
    from kubehoist.cli import (
        credentials,
        demo,
        guard,
        image,
        lab,
        pivot,
        render,
        status,
        timeline,
        upgrade,
        watch,
    )

    for command in (
        render.command,
        status.command,
        watch.command,
        timeline.command,
        pivot.pivot,
        pivot.rollback,
        credentials.credentials,
        upgrade.upgrade_group,
        guard.guard,
        lab.lab,
        image.image,
        demo.command,
    ):
        cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None, *, prog_name: str = PROG) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name=prog_name)


def kubectl_main(argv: Sequence[str] | None = None) -> None:
    """The `kubectl-hoist` entry point: kubectl runs it for `kubectl hoist …`."""
    main(argv, prog_name=KUBECTL_PROG)
