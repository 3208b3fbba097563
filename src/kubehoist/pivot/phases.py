"""The phases of `pivot`: preflight, credentials, deploy, standby, retire, handover,
verify (rollback's are in undo.py, what they run on in context.py).

Each phase is idempotent and checks the cluster rather than trusting the record, so a
run resumed after an interruption at any point finishes the job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Node, Pod

from kubehoist.errors import KubehoistError
from kubehoist.kube import leases, retry
from kubehoist.kube.errors import transient
from kubehoist.kube.objects import is_ready
from kubehoist.pivot import handover
from kubehoist.pivot.context import (
    CONTROL_PLANE_LABEL as CONTROL_PLANE_LABEL,
)
from kubehoist.pivot.context import (
    NAMESPACE as NAMESPACE,
)
from kubehoist.pivot.context import (
    Context as Context,
)
from kubehoist.pivot.context import (
    apply_objects as apply_objects,
)
from kubehoist.pivot.context import (
    control_plane_nodes as control_plane_nodes,
)
from kubehoist.pivot.context import (
    deployment_pods as deployment_pods,
)
from kubehoist.pivot.context import (
    describe,
    name_of,
    objects_of,
    pod_ready,
)
from kubehoist.pivot.context import (
    mirror_pod as mirror_pod,
)
from kubehoist.pivot.probes import reconcile_probe, schedule_probe
from kubehoist.pivot.undo import ROLLBACK_PHASES as ROLLBACK_PHASES
from kubehoist.pivot.workflow import Phase


# --- pivot phases ------------------------------------------------------------------------
def preflight(ctx: Context) -> str:
    lines = _preflight_checks(ctx)
    for line in lines:
        ctx.progress.line(f"    {line}")
    return f"ok: {len(ctx.nodes)} control-plane node(s) run the static {ctx.component.name}"


# How long preflight waits for a control plane's missing mirror pod before it refuses: a
# kubelet that has just restarted makes it again within seconds (in the lab's CI, a
# mirror pod was missing for a moment right after `kubeadm upgrade node`).
MIRROR_WAIT_S = 30.0


def _preflight_checks(ctx: Context) -> list[str]:
    client, comp = ctx.client, ctx.component
    out: list[str] = []
    view = leases.read_lease(client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    out.append(f"Lease {ctx.lease_namespace}/{ctx.lease_name}: held by {view.holder or '(nobody)'}")
    cps = control_plane_nodes(client)
    if not cps:
        raise KubehoistError(
            f"no node has the label {CONTROL_PLANE_LABEL}: is this a kubeadm cluster?"
        )
    running: list[str] = []
    commands: dict[str, tuple[str, ...]] = {}

    def read_mirror(node: str) -> bool:
        pod = mirror_pod(client, comp.name, node)
        if pod is None or pod.spec is None:
            return False
        running.append(node)
        for c in pod.spec.containers:
            if c.name == comp.name or len(pod.spec.containers) == 1:
                commands[node] = tuple((c.command or []) + (c.args or []))
        return True

    parked = set(ctx.state.parked)
    missing = [n for n in cps if not read_mirror(n) and n not in parked]
    if missing and not parked:
        deadline = time.monotonic() + min(ctx.timeout, MIRROR_WAIT_S)
        while missing and time.monotonic() < deadline:
            time.sleep(1.0)
            missing = [n for n in missing if not read_mirror(n)]
    if missing and not parked:
        raise KubehoistError(
            f"no static pod {comp.name} on control-plane node(s) {', '.join(missing)} "
            f"(mirror pods {', '.join(f'{comp.name}-{n}' for n in missing)} not found)"
        )
    ctx.nodes = tuple(sorted(set(running) | parked))
    if commands:
        first_node = sorted(commands)[0]
        base = commands[first_node]
        for node, cmd in sorted(commands.items()):
            if cmd != base:
                diff = sorted(set(cmd) ^ set(base))
                ctx.warnings.append(
                    f"the static pod on {node} differs from {first_node}: {' '.join(diff)}"
                )
                out.append(f"warning: {ctx.warnings[-1]}")
        out.append(
            f"static pods on {', '.join(sorted(commands))} agree" if not ctx.warnings else ""
        )
    if ctx.pod is not None and ctx.rendered is not None:
        dep = objects_of(ctx.rendered, ["Deployment"])[0]
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        _check_image_policy(image, ctx.pod.image)
        replicas = int(dep["spec"].get("replicas", 1))
        schedulable = _schedulable_nodes(client)
        if len(schedulable) < 1:
            raise KubehoistError("no schedulable Ready node for the Deployment's pods")
        out.append(
            f"{replicas} replica(s), {len(schedulable)} schedulable Ready node(s)"
            + (
                " (fewer than replicas: some will share a node)"
                if len(schedulable) < replicas
                else ""
            )
        )
        for w in ctx.rendered.warnings:
            out.append(f"warning: {w}")
    return [line for line in out if line]


def _version_tuple(image: str) -> tuple[int, ...] | None:
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    tag = tag.split("@")[0].lstrip("v")
    try:
        return tuple(int(x) for x in tag.split("-")[0].split(".")[:3])
    except ValueError:
        return None


def _check_image_policy(standby_image: str, static_image: str) -> None:
    """The standby must never be newer than what the control plane runs now (kubeadm
    keeps the controller manager at the API server's version)."""
    new, old = _version_tuple(standby_image), _version_tuple(static_image)
    if new is not None and old is not None and new > old:
        raise KubehoistError(
            f"image {standby_image} is newer than the static pod's {static_image}: "
            "a controller manager must not be newer than the API server"
        )


def _schedulable_nodes(client: Client) -> list[str]:
    out = []
    for n in client.list(Node):
        if n.spec and n.spec.unschedulable:
            continue
        if is_ready(n) and n.metadata and n.metadata.name:
            out.append(n.metadata.name)
    return out


def plan_preflight(ctx: Context) -> list[str]:
    return [f"check: {line}" for line in _preflight_checks(ctx)]


def credentials(ctx: Context) -> str:
    objs = objects_of(ctx.rendered, ["Secret"])
    if not objs:
        return "an existing Secret is used: nothing to apply"
    return "applied " + ", ".join(apply_objects(ctx.client, objs))


def plan_credentials(ctx: Context) -> list[str]:
    return describe(objects_of(ctx.rendered, ["Secret"])) or ["use the existing Secret"]


def deploy(ctx: Context) -> str:
    return "applied " + ", ".join(
        apply_objects(ctx.client, objects_of(ctx.rendered, ["Deployment", "PodDisruptionBudget"]))
    )


def plan_deploy(ctx: Context) -> list[str]:
    return describe(objects_of(ctx.rendered, ["Deployment", "PodDisruptionBudget"]))


def _desired_replicas(ctx: Context) -> int:
    dep = ctx.client.get(Deployment, ctx.component.name, namespace=NAMESPACE)
    return int(dep.spec.replicas or 1) if dep.spec else 1


def standby(ctx: Context) -> str:
    want = _desired_replicas(ctx)
    start = time.monotonic()
    last = ""
    with retry.within(ctx.timeout):
        while True:
            try:
                done, why = _standby_check(ctx, want)
            except KubehoistError as exc:
                if not transient(exc):
                    raise
                done, why = "", exc.message  # the API server is away: keep waiting
            if done:
                return done
            if why != last and why:
                ctx.progress.line(f"    {why}")
                last = why
            if time.monotonic() - start > ctx.timeout:
                raise KubehoistError(
                    f"standbys not Ready after {ctx.timeout:.0f}s"
                    + (f" ({why})" if why else "")
                    + ": nothing was retired"
                )
            time.sleep(0.5)


def _standby_check(ctx: Context, want: int) -> tuple[str, str]:
    """(what is done, or "" while waiting; why it is not yet)."""
    pods = deployment_pods(ctx.client, ctx.component.name)
    ready = [p for p in pods if pod_ready(p)]
    view = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    holder_host = leases.holder_node(view.holder) if view.holder else ""
    holding = [p for p in ready if name_of(p) == holder_host]
    if len(ready) >= want and not holding:
        return f"{len(ready)}/{want} replica(s) Ready, standing by (leader: {view.holder})", ""
    if holding:
        return f"{len(ready)}/{want} Ready; a Deployment pod already leads ({view.holder})", ""
    why = _not_ready_reason(pods)
    return "", f"{len(ready)}/{want} Ready" + (f": {why}" if why else "")


def _not_ready_reason(pods: Sequence[Pod]) -> str:
    for p in pods:
        for cs in (p.status.containerStatuses if p.status else None) or []:
            if cs.state and cs.state.waiting and cs.state.waiting.reason:
                msg = cs.state.waiting.message or ""
                return f"pod {name_of(p)}: {cs.state.waiting.reason} {msg}".strip()
            if cs.state and cs.state.terminated and cs.state.terminated.exitCode:
                return f"pod {name_of(p)}: exited {cs.state.terminated.exitCode}"
    if not pods:
        return "no pod yet"
    return ""


def plan_standby(ctx: Context) -> list[str]:
    return ["wait until the Deployment's replicas are Ready and standing by on the Lease"]


def retire(ctx: Context) -> str:
    nodes = list(ctx.nodes)
    # Recorded before any file moves: a retire that fails half-way (an API server gone
    # while the helpers run) leaves a record that says which nodes may be parked, so
    # that the rollback restores them (an unpark of a node with nothing parked is a
    # no-op). The sha256 of each is recorded once known.
    intent = {n: ctx.state.parked.get(n, "") for n in nodes}
    if intent != ctx.state.parked:
        ctx.state.parked.update(intent)
        ctx.save()
    if ctx.park_all is not None:
        results = ctx.park_all(nodes, ctx.filename)
    else:
        results = {n: ctx.files.park(n, ctx.filename) for n in nodes}
    for node, r in sorted(results.items()):
        ctx.state.parked[node] = r.sha256
        if r.stopped:
            ctx.stopped.add(node)
    ctx.save()
    return "parked " + ", ".join(
        f"{n} ({r.state}{', stopped' if r.stopped else ''}, sha256 {r.sha256[:12]})"
        for n, r in sorted(results.items())
    )


def plan_retire(ctx: Context) -> list[str]:
    return [
        f"move {node}:/etc/kubernetes/manifests/{ctx.filename} to "
        f"/etc/kubernetes/kubehoist/parked/{ctx.filename} (byte for byte, with a record)"
        for node in ctx.nodes
    ]


def handover_phase(ctx: Context) -> str:
    return handover.hand_over_from_static(
        ctx.client,
        component=ctx.component.name,
        lease_namespace=ctx.lease_namespace,
        lease_name=ctx.lease_name,
        retired_nodes=set(ctx.state.parked),
        stopped_nodes=ctx.stopped,
        timeout=ctx.timeout,
    )


def plan_handover(ctx: Context) -> list[str]:
    return [
        "wait until the retired static pods have stopped (the node's runtime shows the pod"
        " stopped, its mirror pod is gone or its container terminated)",
        f"then release Lease {ctx.lease_namespace}/{ctx.lease_name}"
        " if a retired pod still holds it",
    ]


def _deployment_leader(ctx: Context) -> str | None:
    view = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    if not view.holder:
        return None
    names = {name_of(p) for p in deployment_pods(ctx.client, ctx.component.name)}
    return view.holder if leases.holder_node(view.holder) in names else None


def verify(ctx: Context) -> str:
    leader: list[str] = []

    def leads() -> bool:
        got = _deployment_leader(ctx)
        if got:
            leader.append(got)
        return got is not None

    took = leases.wait_until("a Deployment pod to hold the lease", leads, timeout=ctx.timeout)
    first = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    leases.wait_until(
        "the new leader to renew the lease",
        lambda: (
            leases.read_lease(
                ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name
            ).resource_version
            != first.resource_version
        ),
        timeout=ctx.timeout,
    )
    extra = ""
    if ctx.component.name == "kube-controller-manager":
        extra = f"; a probe Deployment got its ReplicaSet in {reconcile_probe(ctx.client):.2f}s"
    elif ctx.component.name == "kube-scheduler":
        extra = f"; a probe pod was scheduled in {schedule_probe(ctx.client):.2f}s"
    ctx.state = dataclasses.replace(ctx.state, status="pivoted")
    return f"{leader[-1]} leads and renews (after {took:.1f}s){extra}"


def plan_verify(ctx: Context) -> list[str]:
    return [
        "wait until a Deployment pod holds the Lease and renews it",
        "create a probe Deployment (0 replicas) and wait for its ReplicaSet",
    ]


PIVOT_PHASES: tuple[Phase[Context], ...] = (
    Phase("preflight", "check the cluster and what will change", preflight, plan_preflight),
    Phase("credentials", "apply the credentials Secret", credentials, plan_credentials),
    Phase("deploy", "apply the Deployment and its PodDisruptionBudget", deploy, plan_deploy),
    Phase("standby", "wait for Ready standbys", standby, plan_standby),
    Phase("retire", "park the static pod manifests", retire, plan_retire),
    Phase("handover", "release the lease of the retired leader", handover_phase, plan_handover),
    Phase("verify", "a Deployment pod leads and the controllers work", verify, plan_verify),
)
RETIRE_INDEX = [p.name for p in PIVOT_PHASES].index("retire")
