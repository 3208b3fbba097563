"""`kubectl_complete-hoist`: completion of `kubectl hoist …` inside kubectl's own.

kubectl (1.26 and later) completes a plugin's arguments by running
`kubectl_complete-<plugin> ARG… INCOMPLETE` from PATH and reading cobra's protocol back:
one candidate a line (`value<TAB>help`), then `:<directive>`. The candidates come from
click's own completion, the same that `_KUBEHOIST_COMPLETE=bash_source kubehoist` wires
into bash and zsh for `kubehoist`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

import click
from click.shell_completion import ShellComplete

DEFAULT: Final = 0
"""cobra's ShellCompDirectiveDefault: the shell may complete file names."""
NO_FILE: Final = 4
"""cobra's ShellCompDirectiveNoFileComp."""


def candidates(
    command: click.Command, args: Sequence[str], incomplete: str, *, prog_name: str
) -> tuple[list[str], int]:
    """Lines for kubectl and the directive: what click would offer after `args`."""
    complete = ShellComplete(command, {}, prog_name, "_KUBECTL_HOIST_COMPLETE")
    items = complete.get_completions(list(args), incomplete)
    lines = [f"{i.value}\t{i.help}" if i.help else str(i.value) for i in items]
    files = any(i.type in ("file", "dir") for i in items)
    return [line for line in lines if line], DEFAULT if files else NO_FILE


def main(argv: Sequence[str] | None = None) -> None:
    from kubehoist.cli import KUBECTL_PROG, cli

    args = list(sys.argv[1:] if argv is None else argv)
    incomplete = args.pop() if args else ""
    lines, directive = candidates(cli, args, incomplete, prog_name=KUBECTL_PROG)
    for line in lines:
        click.echo(line)
    click.echo(f":{directive}")
