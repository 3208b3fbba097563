"""`kubehoist status [COMPONENT…]`: who leads, who stands by, a verdict, and the guards.

Thin: options -> `kubehoist.status.collect` -> table, YAML or JSON. Exit code 0 only
when every component is Healthy (3 otherwise; 1 on errors).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
import yaml

from kubehoist import kube
from kubehoist.cli.options import cluster_options, resolve_components
from kubehoist.kube.transport import stderr_echo
from kubehoist.status import StatusReport, collect
from kubehoist.statusdoc import to_dict
from kubehoist.views import credentials_messages, status_tables


@click.command("status")
@click.argument("components", nargs=-1, metavar="[COMPONENT]...")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["wide", "yaml", "json"]),
    help="Output format (default: tables).",
)
@click.option(
    "--observe",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Watch the Leases up to this many seconds, so that validity is known by "
    "kubehoist's own clock (a lease duration or more can tell Expired).",
)
@cluster_options
def command(
    components: tuple[str, ...],
    output: str | None,
    observe: float,
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    verbose: int,
) -> None:
    """Show the leader election of kube-controller-manager and kube-scheduler, and
    their guards."""
    chosen = resolve_components(components)
    where = kube.target(
        kubeconfig=kubeconfig,
        context=context,
        log=kube.RequestLog(echo=stderr_echo if verbose else None),
    )

    async def run() -> tuple[StatusReport, float]:
        async with kube.open_api(where) as api:
            report = await collect(api, components=chosen, namespace=namespace, observe_s=observe)
            return report, time.monotonic()

    report, now = asyncio.run(run())
    if output == "json":
        click.echo(json.dumps(to_dict(report, now=now), indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(to_dict(report, now=now), sort_keys=False), nl=False)
    else:
        click.echo(status_tables(report, now=now, wide=output == "wide"), nl=False)
    for level, line in credentials_messages(report):
        click.echo(f"{level}: {line}", err=True)
    if verbose:
        click.echo(f"api requests: {where.log.count}", err=True)
    sys.exit(report.exit_code)
