"""kubeadm upgrades of a pivoted cluster: kubehoist steps aside, kubeadm upgrades, and
kubehoist pivots onto kubeadm's new manifests.

Why kubeadm cannot upgrade a pivoted component as it is (kubeadm v1.36's
`phases/upgrade`): `kubeadm upgrade apply|node` checks that every control-plane
component's manifest is in `/etc/kubernetes/manifests` (the `StaticPodManifest` health
check), reads each component's mirror pod `<component>-<node>` for its
`kubernetes.io/config.hash` before it writes anything, and after moving a new manifest
in waits for that hash to change, then for every `component=<name>` pod in
kube-system to be Running. A parked manifest has no mirror pod, so the upgrade stops
before it starts.

So an upgrade is three steps, kubeadm's own in the middle:

1. `prepare`: every parked manifest goes back byte for byte (as rollback's `restore`,
   with the runtime clean-up that spares the restored pod the crash-loop back-off) and
   the static pods run again, as standbys: the Deployment's leader keeps the Lease,
   so the controllers do not stop. The record says `upgrading` (pivot and the
   automatic roll-back leave such a record alone).
2. kubeadm upgrades: `kubeadm upgrade apply` on one control plane, `kubeadm upgrade
   node` on the others, as on any kubeadm cluster. It rewrites the manifests (and
   renews the certificates) and restarts the static pods; a Deployment pod may lead
   all along.
3. `complete`: once every control plane runs the new static pods and every API server
   is at least as new as them (a controller manager must never be newer than an API
   server it talks to, and the Deployment's pods may talk to any of them), the
   component is pivoted again onto kubeadm's new manifest with the options of the
   first pivot: the credentials Secret from the renewed files, the Deployment with the
   new image and flags rolled, the new manifests parked (so a rollback restores the
   *new* static pods), the Lease handed over fast.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightkube import Client

from kubehoist import hostfiles
from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.kubeversion import KubeVersion, from_image
from kubehoist.kubeversion import parse as parse_version
from kubehoist.manifest import StaticPod, load_static_pod
from kubehoist.nodefiles.parking import MANIFESTS_DIR, PARK_DIR
from kubehoist.pivot import phases, refresh, run
from kubehoist.pivot import state as statemod
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Phase, run_phases
from kubehoist.render import render

API_SERVER = "kube-apiserver"


def static_versions(client: Client, component: str, nodes: Sequence[str]) -> dict[str, str | None]:
    """node -> the image of `component`'s static pod there (its mirror pod), None when
    the node has no such mirror pod."""
    out: dict[str, str | None] = {}
    for node in nodes:
        pod = phases.mirror_pod(client, component, node)
        image = None
        if pod is not None and pod.spec is not None:
            images = [c.image for c in pod.spec.containers if c.name == component]
            image = (images or [pod.spec.containers[0].image])[0]
        out[node] = image
    return out


def settled_versions(
    client: Client, component: str, nodes: Sequence[str], *, timeout: float
) -> dict[str, str | None]:
    """`static_versions`, waiting up to `timeout` while a node has no mirror pod yet: a
    kubelet that the upgrade restarted makes its mirror pods again within seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = static_versions(client, component, nodes)
        if all(v is not None for v in got.values()) or time.monotonic() >= deadline:
            return got
        time.sleep(1.0)


def check_skew(
    component: str,
    new_image: str,
    statics: Mapping[str, str | None],
    apiservers: Mapping[str, str | None],
    *,
    kubernetes_version: KubeVersion | None = None,
) -> KubeVersion:
    """PURE: the version `complete` pivots onto, once it is safe; else one error.

    Safe: every control plane's static `component` runs `new_image` (kubeadm upgraded
    every node), and no API server is older (by minor version, as the version skew
    policy says) than that version."""
    new = kubernetes_version or from_image(new_image)
    if new is None:
        raise KubehoistError(
            f"{component} image {new_image}: its tag names no version (pass --kubernetes-version)"
        )
    for node, image in sorted(statics.items()):
        if image is None:
            raise KubehoistError(
                f"node {node}: no static {component} pod (mirror pod {component}-{node} "
                f"not found): run `kubeadm upgrade node` there, or wait for its kubelet"
            )
        if image != new_image:
            raise KubehoistError(
                f"node {node}: static {component} runs {image}, not {new_image}: "
                "run `kubeadm upgrade node` there first"
            )
    for node, image in sorted(apiservers.items()):
        have = from_image(image) if image else None
        if have is None:
            raise KubehoistError(
                f"node {node}: the version of {API_SERVER} is unknown "
                f"(mirror pod {API_SERVER}-{node}: {image or 'not found'})"
            )
        if (have.major, have.minor) < (new.major, new.minor):
            raise KubehoistError(
                f"node {node}: {API_SERVER} is {have}, older than {component} {new}: a "
                f"{component} must not be newer than an API server it talks to; upgrade "
                "that control plane first"
            )
    return new


# --- prepare ----------------------------------------------------------------------------
def check_no_fallback(ctx: phases.Context) -> str:
    """A node the record says is parked but that runs the static pod has a guard's
    fallback in place: the guard will park it again once the Deployment is Ready, which
    would pull the manifest from under kubeadm."""
    running = [
        n
        for n, sha in sorted(ctx.state.parked.items())
        if sha and phases.mirror_pod(ctx.client, ctx.component.name, n) is not None
    ]
    if running and ctx.state.status == "pivoted":
        raise KubehoistError(
            f"node(s) {', '.join(running)} run the static {ctx.component.name} though it is "
            "parked there (a guard's fallback): wait until the guard hands back (`"
            f"kubehoist status {ctx.component.name}`), then prepare again"
        )
    parked = sorted(n for n, sha in ctx.state.parked.items() if sha)
    if ctx.state.status != "upgrading":
        ctx.state = dataclasses.replace(ctx.state, status="upgrading")
        ctx.save()
    return f"{len(parked)} parked manifest(s) to put back: {', '.join(parked) or 'none'}"


def plan_check(ctx: phases.Context) -> list[str]:
    return [
        "check that no guard's fallback is in place (it would be parked again)",
        "record that an upgrade is under way (status `upgrading`)",
    ]


def _unparked(ctx: phases.Context) -> str:
    ctx.state = dataclasses.replace(ctx.state, parked={})
    ctx.save()
    return (
        f"nothing is parked; the static {ctx.component.name} pods run on "
        f"{', '.join(ctx.nodes)} as standbys"
    )


def _plan_unparked(ctx: phases.Context) -> list[str]:
    return ["record that nothing is parked"]


_ROLLBACK = {p.name: p for p in phases.ROLLBACK_PHASES}
PREPARE_PHASES: tuple[Phase[phases.Context], ...] = (
    Phase("check", "no fallback in place; record the upgrade", check_no_fallback, plan_check),
    _ROLLBACK["restore"],
    _ROLLBACK["static-ready"],
    Phase("record", "record what is parked", _unparked, _plan_unparked),
)


# --- the runs -----------------------------------------------------------------------------
def pivoted(client: Client, components: Sequence[Component], *, named: bool) -> list[PivotState]:
    """The records of the components (every one with a record unless `named`: then a
    component without one is an error)."""
    out: list[PivotState] = []
    for comp in components:
        st = statemod.load(client, comp.name)
        if st is None:
            if named:
                raise KubehoistError(
                    f"{comp.name} is not pivoted (ConfigMap kube-system/"
                    f"{statemod.configmap_name(comp.name)} not found): kubeadm upgrades "
                    "its static pods as they are"
                )
            continue
        out.append(st)
    if not out:
        raise KubehoistError("no component is pivoted: `kubeadm upgrade` needs no preparation")
    return out


def prepare(t: run.Target, st: PivotState, *, dry_run: bool = False) -> None:
    """Step 1: the parked static pods back, as standbys."""
    comp = t.component
    if st.status not in ("pivoted", "upgrading"):
        raise KubehoistError(
            f"the pivot of {comp.name} is {st.status}: finish it first (`{t.prog} pivot "
            f"{comp.name}` or `{t.prog} rollback {comp.name}`)"
        )
    ctx = run.context(t, st)
    ctx.nodes = tuple(sorted(st.parked)) or tuple(phases.control_plane_nodes(t.client))
    run_phases(
        PREPARE_PHASES, ctx, dry_run=dry_run, progress=t.progress,
        on_done=None if dry_run else run.recorder(ctx, "UpgradePrepare", save=False),
    )  # fmt: skip


def new_manifest(comp: Component, host_root: Path) -> StaticPod:
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


@dataclass(frozen=True, kw_only=True)
class CompleteOptions:
    host_root: Path
    image: str | None = None
    kubernetes_version: str | None = None
    release_lease_on_exit: bool | None = None
    """None: as the pivot was asked."""
    no_rollback: bool = False
    dry_run: bool = False


def plan_complete(
    t: run.Target, st: PivotState, o: CompleteOptions, *, apiservers: Mapping[str, str | None]
) -> tuple[phases.Context, KubeVersion]:
    """Check that it is safe and render kubeadm's new manifest; writes nothing."""
    comp = t.component
    if st.status != "upgrading":
        raise KubehoistError(
            f"{comp.name} is {st.status}, not upgrading: run `{t.prog} upgrade prepare` "
            "before kubeadm upgrades it"
        )
    override = parse_version(o.kubernetes_version) if o.kubernetes_version else None
    if o.kubernetes_version and override is None:
        raise UsageError(f"--kubernetes-version {o.kubernetes_version}: not a version")
    pod = new_manifest(comp, o.host_root)
    # A node parked by an interrupted `complete` was checked by it already.
    cps = [n for n in apiservers if n not in st.parked]
    statics = settled_versions(t.client, comp.name, cps, timeout=min(t.timeout, 120))
    new = check_skew(comp.name, pod.image, statics, apiservers, kubernetes_version=override)
    asked = dict(st.options)
    if asked.get("image") and not o.image:
        raise UsageError(
            f"the pivot of {comp.name} named --image {asked['image']}: name the new "
            "version's image with --image"
        )
    asked["image"] = o.image
    asked["kubernetes_version"] = o.kubernetes_version
    if o.release_lease_on_exit is not None:
        asked["release_lease_on_exit"] = o.release_lease_on_exit
    options = run.render_options(asked)
    ctx = run.context(t, dataclasses.replace(st, done=(), options=asked))
    ctx.pod = pod
    ctx.rendered = render(
        pod, options, hostfiles.gather_inputs(pod, options, host_root=o.host_root)
    )
    return ctx, new


def complete(t: run.Target, ctx: phases.Context, o: CompleteOptions) -> None:
    """Step 3: pivot again onto kubeadm's new manifest (`plan_complete`'s context)."""
    if o.dry_run:
        run_phases(phases.PIVOT_PHASES, ctx, dry_run=True, progress=t.progress)
        return
    ctx.save()

    def rolled() -> None:
        # `standby` counts Ready replicas, old ones too: the roll onto the new version
        # ends when every replica runs it and one of them leads.
        leader = refresh.wait_rolled(t.client, t.component, timeout=t.timeout, line=t.progress.line)
        t.progress.line(f"{leader} leads")

    run.with_rollback(
        ctx, phases.PIVOT_PHASES, verb="upgrade complete", prog=t.prog,
        no_rollback=o.no_rollback, on_done=run.recorder(ctx, "UpgradeComplete", save=True),
        resume=f"run `{t.prog} upgrade complete` to resume, or `{t.prog} rollback` to go "
        "back to the (new) static pods",
        then=rolled,
    )  # fmt: skip
