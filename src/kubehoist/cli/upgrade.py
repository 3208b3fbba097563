"""`kubehoist upgrade prepare|complete`: the steps around kubeadm's own upgrade of a
pivoted cluster (kubehoist.pivot.upgrade says why and how)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from kubehoist import hostfiles, kube, refresh
from kubehoist.cli.options import kubeconfig_options, prog, resolve_components
from kubehoist.cli.pivot import STOP_WAIT_S, _files, _rollback_after_failure, render_options
from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.kubeversion import parse as parse_version
from kubehoist.manifest import StaticPod, load_static_pod
from kubehoist.pivot import events, helperpod, phases, upgrade
from kubehoist.pivot import state as statemod
from kubehoist.pivot.parking import MANIFESTS_DIR, PARK_DIR
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Progress, run_phases
from kubehoist.render import render

__all__ = ["STOP_WAIT_S", "upgrade_group"]


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
                "--dry-run", is_flag=True, help="Print what each step would do; change nothing."
            ),
            click.option(
                "--timeout", type=float, default=180, show_default=True, help="Seconds per wait."
            ),
        ]
    ):
        func = opt(func)
    return func


def _pivoted(client: Any, names: tuple[str, ...]) -> list[tuple[Component, PivotState]]:
    """The components asked for (default: every one with a pivot record) and their
    records; a component named but not pivoted is an error."""
    out: list[tuple[Component, PivotState]] = []
    for comp in resolve_components(names):
        st = statemod.load(client, comp.name)
        if st is None:
            if names:
                raise KubehoistError(
                    f"{comp.name} is not pivoted (ConfigMap kube-system/"
                    f"{statemod.configmap_name(comp.name)} not found): kubeadm upgrades "
                    "its static pods as they are"
                )
            continue
        out.append((comp, st))
    if not out:
        raise KubehoistError("no component is pivoted: `kubeadm upgrade` needs no preparation here")
    return out


def _context(
    client: Any, comp: Component, st: PivotState, *, manifests_dir: Path | None,
    helper_image: str, timeout: float, progress: Progress,
) -> phases.Context:  # fmt: skip
    files, park_all, unpark_all = _files(client, comp, manifests_dir, helper_image, timeout)
    return phases.Context(
        client=client, component=comp, pod=None, rendered=None, files=files,
        filename=f"{comp.name}.yaml", progress=progress, state=st, timeout=timeout,
        park_all=park_all, unpark_all=unpark_all,
    )  # fmt: skip


def _note(client: Any, comp: Component, prefix: str) -> Any:
    def note(name: str, result: str) -> None:
        reason = prefix + name.replace("-", " ").title().replace(" ", "")
        events.record(client, component=comp.name, reason=reason, message=result)

    return note


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
    for comp, st in _pivoted(client, components):
        if st.status not in ("pivoted", "upgrading"):
            raise KubehoistError(
                f"the pivot of {comp.name} is {st.status}: finish it first (`{prog()} pivot "
                f"{comp.name}` or `{prog()} rollback {comp.name}`)"
            )
        ctx = _context(
            client, comp, st, manifests_dir=manifests_dir, helper_image=helper_image,
            timeout=timeout, progress=progress,
        )  # fmt: skip
        ctx.nodes = tuple(sorted(st.parked)) or tuple(phases.control_plane_nodes(client))
        progress.line(f"{comp.name}:")
        run_phases(
            upgrade.PREPARE_PHASES, ctx, dry_run=dry_run, progress=progress,
            on_done=None if dry_run else _note(client, comp, "UpgradePrepare"),
        )  # fmt: skip
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
    override = parse_version(kubernetes_version) if kubernetes_version else None
    if kubernetes_version and override is None:
        raise UsageError(f"--kubernetes-version {kubernetes_version}: not a version")
    todo = _pivoted(client, components)
    for comp, st in todo:
        if st.status != "upgrading":
            raise KubehoistError(
                f"{comp.name} is {st.status}, not upgrading: run `{prog()} upgrade prepare` "
                "before kubeadm upgrades it"
            )
    cps = phases.control_plane_nodes(client)
    apiservers = upgrade.static_versions(client, upgrade.API_SERVER, cps)
    for comp, st in todo:
        pod = _new_manifest(comp, host_root)
        # A node parked by an interrupted `complete` was checked by it already.
        statics = upgrade.static_versions(client, comp.name, [n for n in cps if n not in st.parked])
        new = upgrade.check_skew(
            comp.name, pod.image, statics, apiservers, kubernetes_version=override
        )
        asked = dict(st.options)
        if asked.get("image") and not image:
            raise UsageError(
                f"the pivot of {comp.name} named --image {asked['image']}: name the new "
                "version's image with --image"
            )
        asked["image"] = image
        asked["kubernetes_version"] = kubernetes_version
        if release_lease_on_exit is not None:
            asked["release_lease_on_exit"] = release_lease_on_exit
        options = render_options(asked)
        rendered = render(pod, options, hostfiles.gather_inputs(pod, options, host_root=host_root))
        ctx = _context(
            client, comp, dataclasses.replace(st, done=(), options=asked),
            manifests_dir=manifests_dir, helper_image=helper_image, timeout=timeout,
            progress=progress,
        )  # fmt: skip
        ctx.pod, ctx.rendered = pod, rendered
        progress.line(f"{comp.name} {new} (every API server is at least {new.major}.{new.minor}):")
        if dry_run:
            run_phases(phases.PIVOT_PHASES, ctx, dry_run=True, progress=progress)
            continue
        ctx.save()
        _complete_one(ctx, no_rollback=no_rollback)
        progress.line(
            f"{comp.name} {new} runs from its Deployment; kubeadm's new manifests are parked "
            f"(`{prog()} rollback {comp.name}` restores them)"
        )
    if dry_run:
        progress.line("dry run: nothing was changed")


def _new_manifest(comp: Component, host_root: Path) -> StaticPod:
    """kubeadm's new manifest on this node: in the manifests directory, or parked by
    an interrupted `complete`."""
    for where in (MANIFESTS_DIR, PARK_DIR):
        path = host_root / where.lstrip("/") / f"{comp.name}.yaml"
        if path.is_file():
            pod = load_static_pod(path.read_text(), source=str(path))
            if pod.component.name != comp.name:
                raise UsageError(f"{path}: a {pod.component.name} manifest, not {comp.name}")
            return pod
    raise KubehoistError(
        f"no {comp.name} manifest under {host_root}{MANIFESTS_DIR} (nor parked): run "
        "`upgrade complete` on an upgraded control plane, or pass --host-root"
    )


def _complete_one(ctx: phases.Context, *, no_rollback: bool) -> None:
    comp = ctx.component
    note = _note(ctx.client, comp, "UpgradeComplete")

    def mark(name: str, result: str) -> None:
        ctx.state = ctx.state.with_done(name)
        ctx.save()
        note(name, result)

    try:
        run_phases(phases.PIVOT_PHASES, ctx, progress=ctx.progress, on_done=mark)
        # `standby` counts Ready replicas, old ones too: the roll onto the new version
        # ends when every replica runs it and one of them leads.
        leader = refresh.wait_rolled(ctx.client, comp, timeout=ctx.timeout, line=ctx.progress.line)
        ctx.progress.line(f"{leader} leads")
    except KeyboardInterrupt:
        ctx.progress.line(
            f"interrupted: run `{prog()} upgrade complete` to resume, or `{prog()} rollback` "
            "to go back to the (new) static pods"
        )
        raise
    except KubehoistError as exc:
        if no_rollback:
            ctx.progress.line(
                f"upgrade complete failed: {exc.message}; --no-rollback: stopping here "
                f"(resume with `{prog()} upgrade complete`, or `{prog()} rollback`)"
            )
            raise
        ctx.progress.line(f"upgrade complete failed: {exc.message}; rolling back")
        _rollback_after_failure(ctx, exc.message)
        raise KubehoistError(
            f"upgrade complete of {comp.name} failed and was rolled back to kubeadm's new "
            f"static pods: {exc.message}"
        ) from None
