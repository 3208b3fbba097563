"""The phases of `rollback`: restore, static-ready, handback, cleanup. Each is
idempotent and checks the cluster rather than trusting the record."""

from __future__ import annotations

from typing import Any

from lightkube import Client
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubehoist.constants import MANAGED_BY_LABEL, MANAGED_BY_VALUE, selector_labels
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases
from kubehoist.kube.client import absent_ok
from kubehoist.nodefiles import helperpod
from kubehoist.pivot import state as statemod
from kubehoist.pivot.context import (
    NAMESPACE,
    Context,
    mirror_pod,
    name_of,
    pod_ready,
)
from kubehoist.pivot.workflow import Phase


def restore(ctx: Context) -> str:
    nodes = sorted(ctx.state.parked) or list(ctx.nodes)
    if not nodes:
        return "nothing parked"
    if ctx.unpark_all is not None:
        results = ctx.unpark_all(nodes, ctx.filename)
    else:
        results = {n: ctx.files.unpark(n, ctx.filename) for n in nodes}
    for node, r in results.items():
        want = ctx.state.parked.get(node)
        if want and r.sha256 != want:
            raise KubehoistError(
                f"node {node}: restored {ctx.filename} has sha256 {r.sha256}, parked was {want}"
            )
    ctx.nodes = tuple(nodes)
    return "restored " + ", ".join(
        f"{n} ({r.state}{', ' + r.cleared if r.cleared else ''})"
        for n, r in sorted(results.items())
    )


def plan_restore(ctx: Context) -> list[str]:
    nodes = sorted(ctx.state.parked) or list(ctx.nodes)
    return [
        f"put {node}:/etc/kubernetes/kubehoist/parked/{ctx.filename} back into "
        f"/etc/kubernetes/manifests (checked against its sha256)"
        for node in nodes
    ] or ["nothing parked"]


def static_ready(ctx: Context) -> str:
    comp = ctx.component.name

    def all_ready() -> bool:
        for node in ctx.nodes:
            pod = mirror_pod(ctx.client, comp, node)
            if pod is None or not pod_ready(pod):
                return False
        return True

    took = leases.wait_until(
        f"the static {comp} pods on {', '.join(ctx.nodes)} to be Ready",
        all_ready,
        timeout=ctx.timeout,
    )
    return f"static pods Ready on {', '.join(ctx.nodes)} ({took:.1f}s)"


def plan_static_ready(ctx: Context) -> list[str]:
    return ["wait until the restored static pods are Ready"]


def handback(ctx: Context) -> str:
    """Stop the Deployment's pods, and once the leader among them is certainly gone,
    release its lease so a static pod takes over at its next retry."""
    comp = ctx.component.name
    # Take the pods and the holder before scaling down: the leader may delete its own
    # pods (and itself) the moment it sees the new replica count.
    pods = {name_of(p) for p in _all_pods(ctx.client, comp)}
    with absent_ok():
        ctx.client.patch(Deployment, comp, {"spec": {"replicas": 0}}, namespace=NAMESPACE)
    for name in pods:
        with absent_ok():
            ctx.client.delete(Pod, name, namespace=NAMESPACE)

    def gone() -> bool:
        return not ({name_of(p) for p in _all_pods(ctx.client, comp)} & pods)

    leases.wait_until(f"the {comp} Deployment's pods to stop", gone, timeout=ctx.timeout)
    # Every one of those pods is gone (their kubelets confirmed it): if one of them
    # still holds the lease, it is certainly dead.
    view = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    released = ""
    if (
        view.holder
        and leases.holder_node(view.holder) in pods
        and leases.release(
            ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name, holder=view.holder
        )
    ):
        released = f"; released the lease of {view.holder}"

    def static_leads() -> bool:
        v = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
        return bool(v.holder) and leases.holder_node(v.holder, ctx.nodes) in set(ctx.nodes)

    took = leases.wait_until("a static pod to hold the lease", static_leads, timeout=ctx.timeout)
    holder = leases.read_lease(
        ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name
    ).holder
    return f"stopped {len(pods)} Deployment pod(s){released}; {holder} leads (after {took:.1f}s)"


def _all_pods(client: Client, component: str) -> list[Pod]:
    labels: dict[str, Any] = dict(selector_labels(component))
    return list(client.list(Pod, namespace=NAMESPACE, labels=labels))


def plan_handback(ctx: Context) -> list[str]:
    return [
        f"scale Deployment {NAMESPACE}/{ctx.component.name} to 0 and delete its pods",
        "once they are gone, release the lease if one of them held it",
        "wait until a static pod leads",
    ]


def cleanup(ctx: Context) -> str:
    comp = ctx.component.name
    removed = []
    labels: dict[str, Any] = dict(selector_labels(comp))
    # The Deployment first (so nothing recreates what follows), then what it owned:
    # removed here rather than left to the garbage collector, so that nothing of
    # kubehoist's is left when the command returns.
    for kind, res in (
        ("Deployment", Deployment),
        ("ReplicaSet", ReplicaSet),
        ("Pod", Pod),
        ("PodDisruptionBudget", PodDisruptionBudget),
        ("Secret", Secret),
    ):
        for obj in ctx.client.list(res, namespace=NAMESPACE, labels=labels):
            with absent_ok():
                ctx.client.delete(res, name_of(obj), namespace=NAMESPACE)
            if kind != "Pod":
                removed.append(f"{kind} {name_of(obj)}")
    # Helper pods whose run was cut short (an API server away while their deletion was
    # retried): finished, doing nothing, but kubehoist's all the same.
    for obj in ctx.client.list(Pod, namespace=NAMESPACE, labels=helperpod.selector(comp)):
        with absent_ok():
            ctx.client.delete(Pod, name_of(obj), namespace=NAMESPACE, grace_period=0)
        removed.append(f"helper Pod {name_of(obj)}")
    leases.wait_until(
        f"the pods of {comp}'s Deployment to be gone",
        lambda: not _all_pods(ctx.client, comp),
        timeout=ctx.timeout,
    )
    statemod.delete(ctx.client, comp)
    return (
        "removed "
        + (", ".join(removed) if removed else "nothing of kubehoist's")
        + ", and the pivot record"
    )


def plan_cleanup(ctx: Context) -> list[str]:
    return [
        f"delete kubehoist's Deployment, PodDisruptionBudget and Secret of {ctx.component.name} "
        f"(label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}), helper pods an interrupted run left, "
        "and the pivot record"
    ]


ROLLBACK_PHASES: tuple[Phase[Context], ...] = (
    Phase("restore", "put the parked static pod manifests back", restore, plan_restore),
    Phase("static-ready", "wait for the static pods", static_ready, plan_static_ready),
    Phase("handback", "stop the Deployment and hand the lease back", handback, plan_handback),
    Phase("cleanup", "remove what pivot created", cleanup, plan_cleanup),
)
