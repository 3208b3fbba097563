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
from collections.abc import Mapping, Sequence

from lightkube import Client

from kubehoist.errors import KubehoistError
from kubehoist.kubeversion import KubeVersion, from_image
from kubehoist.pivot import phases
from kubehoist.pivot.workflow import Phase

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
