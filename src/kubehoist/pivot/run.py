"""The runs of pivot and rollback: what the record allows, the state transitions, the
automatic rollback of a failed pivot, the events. The CLI parses flags and calls
these (cli/pivot.py, cli/upgrade.py); the demo and the benchmarks call the CLI.

Resume rules (the record is `kube-system/kubehoist-pivot-<component>`, state.py):

- no record: a new pivot; a record `in-progress`: the pivot resumes (every phase runs
  again, each checks the cluster rather than trusting the record);
- `pivoted`: pivot checks it again; `rolling-back`: pivot refuses until `rollback`
  finished it; `upgrading`: pivot refuses until `upgrade complete` (upgrade.py);
- a pivot that fails rolls back (unless told not to), also on a defect once anything
  was retired: a cluster is never left with its static pods parked and no leader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease

from kubehoist import hostfiles
from kubehoist.components import Component
from kubehoist.constants import guard_lease_name
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.kube import retry
from kubehoist.kube.client import get_or_none
from kubehoist.manifest import load_static_pod
from kubehoist.nodefiles import helperpod
from kubehoist.nodefiles.parking import LocalNodeFiles, NodeFiles
from kubehoist.pivot import events, phases
from kubehoist.pivot import state as statemod
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Phase, Progress, run_phases
from kubehoist.render import RenderOptions, render

GUARD_CHECK_S = 5.0
"""How long the closing "is a guard installed?" read waits through an API outage."""

STOP_WAIT_S = 20.0
"""How long a park watches the node's runtime for the parked pod to stop; a component
that takes longer is left to the API's evidence (mirror pod gone, container terminated)."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where a run acts and how it talks."""

    client: Client
    component: Component
    progress: Progress
    timeout: float = 180
    manifests_dir: Path | None = None
    """Run on the node itself (its kubelet's static pod directory), else helper pods."""
    helper_image: str = helperpod.DEFAULT_IMAGE
    prog: str = "kubehoist"
    """How the user calls us, for the lines that name a verb."""


# --- pivot's options, kept in the record --------------------------------------------------
def asked_options(**given: Any) -> dict[str, Any]:
    """Pivot's render flags as JSON values, for the record (`PivotState.options`)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}


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


# --- the context of a run -----------------------------------------------------------------
def node_files(t: Target) -> tuple[NodeFiles, Any, Any]:
    """The node files a run parks and unparks, and the all-nodes-at-once helpers."""
    # After a park, the node's runtime is watched for the pod's stop (parking.STOPPED).
    if t.manifests_dir is not None:
        return LocalNodeFiles(t.manifests_dir, stop_wait_s=STOP_WAIT_S), None, None
    pod_files = helperpod.PodNodeFiles(
        client=t.client, image=t.helper_image, component=t.component.name,
        stop_wait_s=STOP_WAIT_S, timeout=max(t.timeout, STOP_WAIT_S + 30),
    )  # fmt: skip
    return pod_files, pod_files.park_all, pod_files.unpark_all


def context(t: Target, state: PivotState) -> phases.Context:
    files, park_all, unpark_all = node_files(t)
    return phases.Context(
        client=t.client, component=t.component, pod=None, rendered=None, files=files,
        filename=f"{t.component.name}.yaml", progress=t.progress, state=state,
        timeout=t.timeout, park_all=park_all, unpark_all=unpark_all,
    )  # fmt: skip


def recorder(ctx: phases.Context, prefix: str, *, save: bool) -> Callable[[str, str], None]:
    """After each phase: (with `save`) record it as done, and post an Event
    `<prefix><Phase>` with its result."""

    def on_done(name: str, result: str) -> None:
        if save:
            ctx.state = ctx.state.with_done(name)
            ctx.save()
        reason = prefix + name.replace("-", " ").title().replace(" ", "")
        events.record(ctx.client, component=ctx.component.name, reason=reason, message=result)

    return on_done


# --- pivot --------------------------------------------------------------------------------
def pivot(
    t: Target,
    *,
    asked: dict[str, Any],
    manifest: Path,
    host_root: Path,
    skip: Sequence[str] = (),
    dry_run: bool = False,
    no_rollback: bool = False,
) -> None:
    """Move the component from its static pods to a Deployment (or resume that)."""
    comp, prog = t.component, t.prog
    existing = statemod.load(t.client, comp.name)
    if existing is not None and existing.status == "rolling-back":
        raise KubehoistError(
            f"a rollback of {comp.name} is unfinished: run `{prog} rollback` first"
        )
    if existing is not None and existing.status == "upgrading":
        raise KubehoistError(
            f"an upgrade of {comp.name} is under way (`{prog} upgrade prepare` put its "
            f"static pods back): finish it with `{prog} upgrade complete`"
        )
    if existing is not None and existing.status == "pivoted":
        t.progress.line(f"{comp.name} is already pivoted; checking it again")
    st = existing or PivotState(component=comp.name, options=asked)
    ctx = context(t, st)
    if manifest.exists():
        pod = load_static_pod(manifest.read_text(), source=str(manifest))
        if pod.component.name != comp.name:
            raise UsageError(f"{manifest}: a {pod.component.name} manifest, not {comp.name}")
        options = render_options(asked)
        ctx.pod = pod
        ctx.rendered = render(
            pod, options, hostfiles.gather_inputs(pod, options, host_root=host_root)
        )
    elif existing is None or "deploy" not in existing.done:
        raise KubehoistError(f"{manifest}: no such manifest (pass --host-root or -f)")
    if dry_run:
        run_phases(phases.PIVOT_PHASES, ctx, skip=skip, dry_run=True, progress=t.progress)
        return
    if existing is None:
        ctx.save()
    with_rollback(
        ctx, phases.PIVOT_PHASES, verb="pivot", prog=prog, skip=skip, done=st.done,
        no_rollback=no_rollback, on_done=recorder(ctx, "Pivot", save=True),
        resume=f"run `{prog} pivot` to resume or `{prog} rollback` to undo",
    )  # fmt: skip


def with_rollback(
    ctx: phases.Context,
    phase_list: Sequence[Phase[phases.Context]],
    *,
    verb: str,
    prog: str,
    resume: str,
    skip: Sequence[str] = (),
    done: Sequence[str] = (),
    no_rollback: bool = False,
    on_done: Callable[[str, str], None] | None = None,
    then: Callable[[], None] | None = None,
) -> None:
    """Run the phases (then `then`); on a failure roll back, unless `no_rollback`."""
    name = ctx.component.name
    try:
        run_phases(phase_list, ctx, skip=skip, done=done, progress=ctx.progress, on_done=on_done)
        if then is not None:
            then()
    except KeyboardInterrupt:
        ctx.progress.line(f"interrupted: the progress is recorded; {resume}")
        raise
    except KubehoistError as exc:
        if no_rollback:
            ctx.progress.line(
                f"{verb} failed: {exc.message}; --no-rollback: stopping here ({resume})"
            )
            raise
        ctx.progress.line(f"{verb} failed: {exc.message}; rolling back")
        rollback_after_failure(ctx, f"{verb} of {name}", exc.message, prog=prog)
        raise KubehoistError(
            f"{verb} of {name} failed and was rolled back: {exc.message}"
        ) from None
    except Exception as exc:
        # A defect, not an expected failure: it keeps its traceback, but a cluster whose
        # static pods were retired is not left without a controller manager for it.
        if no_rollback or not ctx.state.parked:
            raise
        ctx.progress.line(f"{verb} failed unexpectedly ({type(exc).__name__}: {exc}); rolling back")
        rollback_after_failure(ctx, f"{verb} of {name}", f"{type(exc).__name__}: {exc}", prog=prog)
        raise


def guarded(client: Client, comp: Component) -> bool | None:
    """Whether a guard is installed for `comp` (its guards' Lease exists); None: unknown."""
    try:
        with retry.within(GUARD_CHECK_S):
            lease = get_or_none(client, Lease, guard_lease_name(comp.name), namespace="kube-system")
    except (ApiError, KubehoistError):
        return None
    return lease is not None


# --- rollback -----------------------------------------------------------------------------
def rollback_after_failure(ctx: phases.Context, what: str, why: str, *, prog: str) -> None:
    """The automatic rollback of a failed run; if it fails too, one line says both and
    how to finish (the record says `rolling-back`, so `rollback` resumes it)."""
    try:
        roll_back(ctx)
    except KubehoistError as exc:
        raise KubehoistError(
            f"{what} failed ({why}) and its rollback failed too ({exc.message}): run "
            f"`{prog} rollback {ctx.component.name}` to finish it"
        ) from None


def roll_back(ctx: phases.Context, *, skip: Sequence[str] = (), dry_run: bool = False) -> None:
    """The static pods back byte for byte, the Deployment removed."""
    if not dry_run:
        ctx.state = dataclasses.replace(ctx.state, status="rolling-back")
        ctx.save()
    if not ctx.state.parked:
        # Nothing retired: the static pods still lead; only remove what was created.
        only = [p for p in phases.ROLLBACK_PHASES if p.name == "cleanup"]
        run_phases(only, ctx, skip=skip, dry_run=dry_run, progress=ctx.progress)
        return
    ctx.nodes = tuple(sorted(ctx.state.parked))
    run_phases(
        phases.ROLLBACK_PHASES, ctx, skip=skip, dry_run=dry_run, progress=ctx.progress,
        on_done=None if dry_run else recorder(ctx, "Rollback", save=False),
    )  # fmt: skip


def rollback(t: Target, *, skip: Sequence[str] = (), dry_run: bool = False) -> None:
    """Undo the component's pivot (or finish an interrupted rollback)."""
    st = statemod.load(t.client, t.component.name)
    if st is None:
        raise KubehoistError(
            f"no pivot of {t.component.name} is recorded (ConfigMap kube-system/"
            f"{statemod.configmap_name(t.component.name)} not found): nothing to roll back"
        )
    roll_back(context(t, st), skip=skip, dry_run=dry_run)
