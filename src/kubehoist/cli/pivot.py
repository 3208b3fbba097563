"""`kubehoist pivot` and `kubehoist rollback`: thin wrappers around `kubehoist.pivot`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease

from kubehoist import hostfiles, kube
from kubehoist.cli.options import (
    kubeconfig_options,
    prog,
    release_options,
    resolve_components,
)
from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.guard.loop import guard_lease_name
from kubehoist.kube import retry
from kubehoist.kube.client import get_or_none
from kubehoist.manifest import load_static_pod
from kubehoist.pivot import events, helperpod, phases
from kubehoist.pivot import state as statemod
from kubehoist.pivot.parking import LocalNodeFiles, NodeFiles
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Progress, run_phases
from kubehoist.render import RenderOptions, render

GUARD_CHECK_S = 5.0
"""How long the closing "is a guard installed?" read waits through an API outage."""

STOP_WAIT_S = 20.0
"""How long a park watches the node's runtime for the parked pod to stop; a component
that takes longer is left to the API's evidence (mirror pod gone, container terminated)."""


def _common(func: Any) -> Any:
    for opt in reversed(
        [
            click.argument("component", required=False, default="kube-controller-manager"),
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
                "--dry-run", is_flag=True, help="Print what each phase would do; change nothing."
            ),
            click.option(
                "--timeout", type=float, default=180, show_default=True, help="Seconds per wait."
            ),
            click.option("--skip-phases", default="", metavar="P1,P2", help="Phases to skip."),
        ]
    ):
        func = opt(func)
    return func


def asked_options(**given: Any) -> dict[str, Any]:
    """Pivot's render flags as JSON values, for the record (`PivotState.options`)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def render_options(asked: dict[str, Any]) -> RenderOptions:
    """The RenderOptions of pivot's flags (as `asked_options` records them)."""
    return RenderOptions(
        now=datetime.now(UTC),
        secret_name=asked.get("secret_name"),
        secret_exists=asked.get("secret_name") is not None,
        replicas=int(asked.get("replicas") or 2),
        port=asked.get("port"),
        image=asked.get("image"),
        server=asked.get("server"),
        lease_duration=asked.get("lease_duration"),
        renew_deadline=asked.get("renew_deadline"),
        retry_period=asked.get("retry_period"),
        set_flags=tuple(asked.get("set_flag") or ()),
        drop_flags=tuple(asked.get("drop_flag") or ()),
        release_lease_on_exit=bool(asked.get("release_lease_on_exit")),
        kubernetes_version=asked.get("kubernetes_version"),
    )


def _component(name: str) -> Component:
    return resolve_components((name,))[0]


def _files(
    client: Any, comp: Component, manifests_dir: Path | None, image: str, timeout: float
) -> tuple[NodeFiles, Any, Any]:
    # After a park, the node's runtime is watched for the pod's stop (parking.STOPPED).
    if manifests_dir is not None:
        return LocalNodeFiles(manifests_dir, stop_wait_s=STOP_WAIT_S), None, None
    pod_files = helperpod.PodNodeFiles(
        client=client, image=image, component=comp.name, stop_wait_s=STOP_WAIT_S,
        timeout=max(timeout, STOP_WAIT_S + 30),
    )  # fmt: skip
    return pod_files, pod_files.park_all, pod_files.unpark_all


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
    asked = asked_options(
        secret_name=secret_name, replicas=replicas, port=port, image=image, server=server,
        lease_duration=lease_duration, renew_deadline=renew_deadline,
        retry_period=retry_period, set_flag=set_flag, drop_flag=drop_flag,
        release_lease_on_exit=release_lease_on_exit, kubernetes_version=kubernetes_version,
    )  # fmt: skip
    comp = _component(component)
    where = kube.target(kubeconfig=kubeconfig, context=context)
    client = kube.session(where, retry_for_s=timeout)
    progress = Progress()
    existing = statemod.load(client, comp.name)
    if existing is not None and existing.status == "rolling-back":
        raise KubehoistError(
            f"a rollback of {comp.name} is unfinished: run `{prog()} rollback` first"
        )
    if existing is not None and existing.status == "upgrading":
        raise KubehoistError(
            f"an upgrade of {comp.name} is under way (`{prog()} upgrade prepare` put its "
            f"static pods back): finish it with `{prog()} upgrade complete`"
        )
    if existing is not None and existing.status == "pivoted":
        progress.line(f"{comp.name} is already pivoted; checking it again")
    path = manifest or host_root / "etc/kubernetes/manifests" / f"{comp.name}.yaml"
    pod, rendered = None, None
    if path.exists():
        pod = load_static_pod(path.read_text(), source=str(path))
        if pod.component.name != comp.name:
            raise UsageError(f"{path}: a {pod.component.name} manifest, not {comp.name}")
        options = render_options(asked)
        rendered = render(pod, options, hostfiles.gather_inputs(pod, options, host_root=host_root))
    elif existing is None or "deploy" not in existing.done:
        raise KubehoistError(f"{path}: no such manifest (pass --host-root or -f)")
    files, park_all, unpark_all = _files(client, comp, manifests_dir, helper_image, timeout)
    st = existing or PivotState(component=comp.name, options=asked)
    ctx = phases.Context(
        client=client, component=comp, pod=pod, rendered=rendered, files=files,
        filename=f"{comp.name}.yaml", progress=progress, state=st, timeout=timeout,
        park_all=park_all, unpark_all=unpark_all,
    )  # fmt: skip
    skip = [s for s in skip_phases.split(",") if s]
    if dry_run:
        run_phases(phases.PIVOT_PHASES, ctx, skip=skip, dry_run=True, progress=progress)
        progress.line("dry run: nothing was changed")
        return
    if existing is None:
        ctx.save()

    def mark(name: str, result: str) -> None:
        ctx.state = ctx.state.with_done(name)
        ctx.save()
        events.record(client, component=comp.name, reason=f"Pivot{name.title()}", message=result)

    try:
        run_phases(
            phases.PIVOT_PHASES, ctx, skip=skip, done=st.done, progress=progress, on_done=mark
        )
    except KeyboardInterrupt:
        progress.line(
            f"interrupted: the pivot's progress is recorded; run `{prog()} pivot` to resume "
            f"or `{prog()} rollback` to undo"
        )
        raise
    except KubehoistError as exc:
        if no_rollback:
            progress.line(
                f"pivot failed: {exc.message}; --no-rollback: stopping here "
                f"(resume with `{prog()} pivot`, undo with `{prog()} rollback`)"
            )
            raise
        progress.line(f"pivot failed: {exc.message}; rolling back")
        _rollback_after_failure(ctx, exc.message)
        raise KubehoistError(
            f"pivot of {comp.name} failed and was rolled back: {exc.message}"
        ) from None
    except Exception as exc:
        # A defect, not an expected failure: it keeps its traceback, but a cluster whose
        # static pods were retired is not left without a controller manager for it.
        if no_rollback or not ctx.state.parked:
            raise
        progress.line(f"pivot failed unexpectedly ({type(exc).__name__}: {exc}); rolling back")
        _rollback_after_failure(ctx, f"{type(exc).__name__}: {exc}")
        raise
    progress.line(
        f"{comp.name} now runs from its Deployment; undo with `{prog()} rollback {comp.name}`"
    )
    if _guarded(client, comp) is False:
        progress.line(
            f"no guard is installed: if every replica is lost, nothing brings {comp.name} "
            f"back; `{prog()} guard install --component {comp.name}` closes that loop"
        )


def _guarded(client: Any, comp: Component) -> bool | None:
    """Whether a guard is installed for `comp` (its guards' Lease exists); None: unknown."""
    try:
        with retry.within(GUARD_CHECK_S):
            lease = get_or_none(client, Lease, guard_lease_name(comp.name), namespace="kube-system")
    except (ApiError, KubehoistError):
        return None
    return lease is not None


def _rollback_after_failure(ctx: phases.Context, why: str) -> None:
    """The automatic rollback of a failed pivot; if it fails too, one line says both and
    how to finish (the record says `rolling-back`, so `rollback` resumes it)."""
    try:
        _rollback(ctx, skip=[])
    except KubehoistError as exc:
        raise KubehoistError(
            f"pivot of {ctx.component.name} failed ({why}) and its rollback failed too "
            f"({exc.message}): run `{prog()} rollback {ctx.component.name}` to finish it"
        ) from None


def _rollback(ctx: phases.Context, *, skip: list[str], dry_run: bool = False) -> None:
    if not dry_run:
        ctx.state = dataclasses.replace(ctx.state, status="rolling-back")
        ctx.save()
    if not ctx.state.parked:
        # Nothing retired: the static pods still lead; only remove what was created.
        only = [p for p in phases.ROLLBACK_PHASES if p.name == "cleanup"]
        run_phases(only, ctx, skip=skip, dry_run=dry_run, progress=ctx.progress)
        return
    ctx.nodes = tuple(sorted(ctx.state.parked))

    def note(name: str, result: str) -> None:
        events.record(
            ctx.client,
            component=ctx.component.name,
            reason=f"Rollback{name.replace('-', ' ').title().replace(' ', '')}",
            message=result,
        )

    run_phases(
        phases.ROLLBACK_PHASES, ctx, skip=skip, dry_run=dry_run, progress=ctx.progress, on_done=note
    )


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
    st = statemod.load(client, comp.name)
    if st is None:
        raise KubehoistError(
            f"no pivot of {comp.name} is recorded (ConfigMap kube-system/"
            f"{statemod.configmap_name(comp.name)} not found): nothing to roll back"
        )
    files, park_all, unpark_all = _files(client, comp, manifests_dir, helper_image, timeout)
    ctx = phases.Context(
        client=client, component=comp, pod=None, rendered=None, files=files,
        filename=f"{comp.name}.yaml", progress=progress, state=st, timeout=timeout,
        park_all=park_all, unpark_all=unpark_all,
    )  # fmt: skip
    _rollback(ctx, skip=[s for s in skip_phases.split(",") if s], dry_run=dry_run)
    if dry_run:
        progress.line("dry run: nothing was changed")
    else:
        progress.line(f"{comp.name} runs from its static pods again")
        if _guarded(client, comp):
            progress.line(
                f"its guard is still installed (it leaves static pods alone); remove it with "
                f"`{prog()} guard uninstall --component {comp.name}`"
            )
