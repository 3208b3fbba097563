"""`kubehoist pivot` and `kubehoist rollback`: flags in, `kubehoist.pivot.run` does the
work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kubehoist import kube
from kubehoist.cli.options import (
    kubeconfig_options,
    prog,
    release_options,
    resolve_components,
)
from kubehoist.components import Component
from kubehoist.nodefiles import helperpod
from kubehoist.pivot import phases
from kubehoist.pivot import run as pivotrun
from kubehoist.pivot.workflow import Phase, Progress


def run_options(what: str) -> list[Any]:
    """--manifests-dir, --helper-image, --dry-run, --timeout: how a run reaches the
    nodes and waits (pivot, rollback, upgrade prepare/complete). `what`: "phase" or
    "step", for --dry-run's help."""
    return [
        click.option(
            "--manifests-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Run on the node itself: its kubelet's static pod directory (single node).",
        ),
        click.option(
            "--helper-image",
            default=helperpod.DEFAULT_IMAGE,
            show_default=True,
            help="Image of the node-pinned helper pods (a small shell image).",
        ),
        click.option(
            "--dry-run", is_flag=True, help=f"Print what each {what} would do; change nothing."
        ),
        click.option(
            "--timeout", type=float, default=180, show_default=True, help="Seconds per wait."
        ),
    ]


def _common(func: Any) -> Any:
    for opt in reversed(
        [
            click.argument("component", required=False, default="kube-controller-manager"),
            kubeconfig_options,
            *run_options("phase"),
            click.option("--skip-phases", default="", metavar="P1,P2", help="Phases to skip."),
        ]
    ):
        func = opt(func)
    return func


def _component(name: str) -> Component:
    return resolve_components((name,))[0]


def target(
    client: Any, comp: Component, *, manifests_dir: Path | None, helper_image: str,
    timeout: float, progress: Progress,
) -> pivotrun.Target:  # fmt: skip
    return pivotrun.Target(
        client=client, component=comp, progress=progress, timeout=timeout,
        manifests_dir=manifests_dir, helper_image=helper_image, prog=prog(),
    )  # fmt: skip


@click.command("pivot")
@_common
@click.option(
    "--host-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Where a control-plane node's files are (the manifest and credentials are read under it).",
)
@click.option(
    "-f",
    "--filename",
    "manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The static pod manifest (default <host-root>/etc/kubernetes/manifests/<component>.yaml).",
)
@click.option("--secret-name", help="Use this existing Secret for the credentials.")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="--secure-port of the Deployment.")
@click.option("--image", help="Image of the Deployment (default: the static pod's).")
@click.option(
    "--server", help="API endpoint for the pods' kubeconfigs (default: controlPlaneEndpoint)."
)
@click.option("--lease-duration", metavar="DURATION")
@click.option("--renew-deadline", metavar="DURATION")
@click.option(
    "--retry-period", metavar="DURATION", help="Leader-election retry period of the standbys."
)
@click.option("--set-flag", multiple=True, metavar="--NAME=VALUE")
@click.option("--drop-flag", multiple=True, metavar="--NAME")
@release_options
@click.option(
    "--no-rollback", is_flag=True, help="On a failure after retire, stop instead of rolling back."
)
def pivot(
    *,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    manifests_dir: Path | None,
    helper_image: str,
    dry_run: bool,
    timeout: float,
    skip_phases: str,
    host_root: Path,
    manifest: Path | None,
    secret_name: str | None,
    replicas: int,
    port: int | None,
    image: str | None,
    server: str | None,
    lease_duration: str | None,
    renew_deadline: str | None,
    retry_period: str | None,
    set_flag: tuple[str, ...],
    drop_flag: tuple[str, ...],
    release_lease_on_exit: bool,
    kubernetes_version: str | None,
    no_rollback: bool,
) -> None:
    """Move COMPONENT (default kube-controller-manager) from its static pods to a Deployment."""
    asked = pivotrun.asked_options(
        secret_name=secret_name, replicas=replicas, port=port, image=image, server=server,
        lease_duration=lease_duration, renew_deadline=renew_deadline,
        retry_period=retry_period, set_flag=set_flag, drop_flag=drop_flag,
        release_lease_on_exit=release_lease_on_exit, kubernetes_version=kubernetes_version,
    )  # fmt: skip
    comp = _component(component)
    client = kube.session(kube.target(kubeconfig=kubeconfig, context=context), retry_for_s=timeout)
    progress = Progress()
    t = target(
        client, comp, manifests_dir=manifests_dir, helper_image=helper_image, timeout=timeout,
        progress=progress,
    )  # fmt: skip
    pivotrun.pivot(
        t, asked=asked, host_root=host_root, dry_run=dry_run, no_rollback=no_rollback,
        manifest=manifest or host_root / "etc/kubernetes/manifests" / f"{comp.name}.yaml",
        skip=_skip(skip_phases, phases.PIVOT_PHASES),
    )  # fmt: skip
    if dry_run:
        progress.line("dry run: nothing was changed")
        return
    progress.line(
        f"{comp.name} now runs from its Deployment; undo with `{prog()} rollback {comp.name}`"
    )
    if pivotrun.guarded(client, comp) is False:
        progress.line(
            f"no guard is installed: if every replica is lost, nothing brings {comp.name} "
            f"back; `{prog()} guard install --component {comp.name}` closes that loop"
        )


def _skip(value: str, known: Sequence[Phase[Any]]) -> list[str]:
    """`--skip-phases`, each name one of `known`'s (a typo skips nothing silently)."""
    names = [p.name for p in known]
    asked = [s.strip() for s in value.split(",") if s.strip()]
    for name in asked:
        if name not in names:
            raise click.BadParameter(
                f"{name!r} is not a phase (phases: {', '.join(names)})",
                param_hint="'--skip-phases'",
            )
    return asked


@click.command("rollback")
@_common
def rollback(
    *,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    manifests_dir: Path | None,
    helper_image: str,
    dry_run: bool,
    timeout: float,
    skip_phases: str,
) -> None:
    """Undo a pivot of COMPONENT: static pods back byte for byte, the Deployment removed."""
    comp = _component(component)
    client = kube.session(kube.target(kubeconfig=kubeconfig, context=context), retry_for_s=timeout)
    progress = Progress()
    t = target(
        client, comp, manifests_dir=manifests_dir, helper_image=helper_image, timeout=timeout,
        progress=progress,
    )  # fmt: skip
    pivotrun.rollback(t, skip=_skip(skip_phases, phases.ROLLBACK_PHASES), dry_run=dry_run)
    if dry_run:
        progress.line("dry run: nothing was changed")
    else:
        progress.line(f"{comp.name} runs from its static pods again")
        if pivotrun.guarded(client, comp):
            progress.line(
                f"its guard is still installed (it leaves static pods alone); remove it with "
                f"`{prog()} guard uninstall --component {comp.name}`"
            )
