"""`kubehoist upgrade prepare|complete`: the steps around kubeadm's own upgrade of a
pivoted cluster (kubehoist.pivot.upgrade says why and how, and does them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kubehoist import kube
from kubehoist.cli.options import kubeconfig_options, prog, resolve_components
from kubehoist.cli.pivot import run_options, target
from kubehoist.pivot import phases, upgrade
from kubehoist.pivot.workflow import Progress


@click.group("upgrade")
def upgrade_group() -> None:
    """The steps around `kubeadm upgrade` on a pivoted cluster.

    \b
    1. kubehoist upgrade prepare    the parked static pods run again, as standbys
    2. kubeadm upgrade apply vX     on one control plane; `kubeadm upgrade node` on
                                    every other one
    3. kubehoist upgrade complete   pivot again onto kubeadm's new manifests
    """


def _shared(func: Any) -> Any:
    for opt in reversed(
        [
            click.argument("components", nargs=-1, metavar="[COMPONENT]..."),
            kubeconfig_options,
            *run_options("step"),
        ]
    ):
        func = opt(func)
    return func


@upgrade_group.command("prepare")
@_shared
def prepare(
    *,
    components: tuple[str, ...],
    kubeconfig: str | None,
    context: str | None,
    manifests_dir: Path | None,
    helper_image: str,
    dry_run: bool,
    timeout: float,
) -> None:
    """Put the parked static pods back, byte for byte, so that `kubeadm upgrade` finds
    what it upgrades; the Deployment keeps leading meanwhile. COMPONENT: default every
    pivoted one."""
    client = kube.session(kube.target(kubeconfig=kubeconfig, context=context), retry_for_s=timeout)
    progress = Progress()
    comps = resolve_components(components)
    for st in upgrade.pivoted(client, comps, named=bool(components)):
        comp = resolve_components((st.component,))[0]
        progress.line(f"{comp.name}:")
        t = target(
            client, comp, manifests_dir=manifests_dir, helper_image=helper_image,
            timeout=timeout, progress=progress,
        )  # fmt: skip
        upgrade.prepare(t, st, dry_run=dry_run)
    if dry_run:
        progress.line("dry run: nothing was changed")
        return
    progress.line(
        "ready for kubeadm: run `kubeadm upgrade apply <version>` on one control plane and "
        f"`kubeadm upgrade node` on every other one, then `{prog()} upgrade complete`"
    )


@upgrade_group.command("complete")
@_shared
@click.option(
    "--host-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Where an upgraded control-plane node's files are (kubeadm's new manifest and "
    "the renewed credentials are read under it).",
)
@click.option(
    "--image",
    help="Image of the Deployment (default: the new static pod's; required when the "
    "pivot named one).",
)
@click.option(
    "--kubernetes-version",
    metavar="VERSION",
    help="The new version when the image's tag does not say it.",
)
@click.option(
    "--release-lease-on-exit/--no-release-lease-on-exit",
    default=None,
    help="Turn the release gate on or off now (default: as the pivot was asked).",
)
@click.option(
    "--no-rollback", is_flag=True, help="On a failure after retire, stop instead of rolling back."
)
def complete(
    *,
    components: tuple[str, ...],
    kubeconfig: str | None,
    context: str | None,
    manifests_dir: Path | None,
    helper_image: str,
    dry_run: bool,
    timeout: float,
    host_root: Path,
    image: str | None,
    kubernetes_version: str | None,
    release_lease_on_exit: bool | None,
    no_rollback: bool,
) -> None:
    """Pivot again onto kubeadm's new manifests, once every control plane is upgraded:
    new credentials, the Deployment on the new image and flags, the new manifests parked.
    COMPONENT: default every pivoted one."""
    client = kube.session(kube.target(kubeconfig=kubeconfig, context=context), retry_for_s=timeout)
    progress = Progress()
    o = upgrade.CompleteOptions(
        host_root=host_root, image=image, kubernetes_version=kubernetes_version,
        release_lease_on_exit=release_lease_on_exit, no_rollback=no_rollback, dry_run=dry_run,
    )  # fmt: skip
    states = upgrade.pivoted(client, resolve_components(components), named=bool(components))
    apiservers = upgrade.settled_versions(
        client, upgrade.API_SERVER, phases.control_plane_nodes(client), timeout=min(timeout, 120)
    )
    planned = []
    for st in states:  # every check before anything changes
        comp = resolve_components((st.component,))[0]
        t = target(
            client, comp, manifests_dir=manifests_dir, helper_image=helper_image,
            timeout=timeout, progress=progress,
        )  # fmt: skip
        planned.append((t, *upgrade.plan_complete(t, st, o, apiservers=apiservers)))
    for t, ctx, new in planned:
        progress.line(
            f"{t.component.name} {new} (no API server is older than {new.major}.{new.minor}):"
        )
        upgrade.complete(t, ctx, o)
        if not dry_run:
            progress.line(
                f"{t.component.name} {new} runs from its Deployment; kubeadm's new manifests "
                f"are parked (`{prog()} rollback {t.component.name}` restores them)"
            )
    if dry_run:
        progress.line("dry run: nothing was changed")
