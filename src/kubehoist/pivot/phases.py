"""The phases of `pivot` and of `rollback`.

pivot:    preflight, credentials, deploy, standby, retire, handover, verify
rollback: restore, static-ready, handback, cleanup

Each phase is idempotent and checks the cluster rather than trusting the record, so a
run resumed after an interruption at any point finishes the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import Client, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Container, PodSpec, Toleration
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Node, Pod, Secret
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType

from kubehoist.components import Component
from kubehoist.constants import FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, selector_labels
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases, retry
from kubehoist.kube.client import absent_ok, get_or_none
from kubehoist.kube.errors import transient
from kubehoist.kube.probe import zero_replica_deployment
from kubehoist.manifest import StaticPod
from kubehoist.nodefiles import helperpod
from kubehoist.nodefiles.parking import NodeFiles
from kubehoist.pivot import handover
from kubehoist.pivot import state as statemod
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.workflow import Phase, Progress
from kubehoist.render import Rendered

NAMESPACE = "kube-system"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclass(kw_only=True)
class Context:
    client: Client
    component: Component
    pod: StaticPod | None
    rendered: Rendered | None
    files: NodeFiles
    filename: str
    progress: Progress
    state: PivotState
    timeout: float = 180
    nodes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    park_all: Any = None  # optional callable(nodes, filename) -> dict[node, ParkResult]
    # retired nodes whose runtime showed the pod stopped (parking.STOPPED)
    stopped: set[str] = field(default_factory=set)
    unpark_all: Any = None

    @property
    def lease_name(self) -> str:
        return self.component.lease_name

    @property
    def lease_namespace(self) -> str:
        return self.component.lease_namespace

    def save(self) -> None:
        self.state = statemod.save(self.client, self.state)


# --- cluster reads -----------------------------------------------------------------------
def control_plane_nodes(client: Client) -> list[str]:
    nodes = client.list(Node, labels={CONTROL_PLANE_LABEL: None})
    return sorted(n.metadata.name for n in nodes if n.metadata and n.metadata.name)


def mirror_pod(client: Client, component: str, node: str) -> Pod | None:
    return get_or_none(client, Pod, f"{component}-{node}", namespace=NAMESPACE)


def deployment_pods(client: Client, component: str) -> list[Pod]:
    labels: dict[str, Any] = dict(selector_labels(component))
    return [
        p
        for p in client.list(Pod, namespace=NAMESPACE, labels=labels)
        if p.metadata and p.metadata.deletionTimestamp is None
    ]


def _ready(pod: Pod) -> bool:
    for c in (pod.status.conditions if pod.status else None) or []:
        if c.type == "Ready":
            return c.status == "True"
    return False


def _name(obj: Any) -> str:
    return str(obj.metadata.name) if obj.metadata and obj.metadata.name else "?"


def _objects(rendered: Rendered | None, kinds: Sequence[str]) -> list[Mapping[str, Any]]:
    if rendered is None:
        return []
    return [o for o in rendered.objects if o.get("kind") in kinds]


def apply_objects(client: Client, objs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Server-side apply each object as kubehoist's field manager (pivot, refresh)."""
    done = []
    for obj in objs:
        res = codecs.from_dict(dict(obj))
        client.apply(res, field_manager=FIELD_MANAGER, force=True)
        done.append(
            f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        )
    return done


def _describe(objs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for o in objs:
        meta = o["metadata"]
        extra = ""
        if o["kind"] == "Secret":
            extra = f" ({len(o.get('data', {}))} keys: {', '.join(sorted(o.get('data', {})))})"
        out.append(
            f"server-side apply {o['kind']} {meta.get('namespace', '')}/{meta['name']}{extra}"
        )
    return out


# --- pivot phases ------------------------------------------------------------------------
def preflight(ctx: Context) -> str:
    lines = _preflight_checks(ctx)
    for line in lines:
        ctx.progress.line(f"    {line}")
    return f"ok: {len(ctx.nodes)} control-plane node(s) run the static {ctx.component.name}"


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
    for node in cps:
        pod = mirror_pod(client, comp.name, node)
        if pod is not None and pod.spec is not None:
            running.append(node)
            for c in pod.spec.containers:
                if c.name == comp.name or len(pod.spec.containers) == 1:
                    commands[node] = tuple((c.command or []) + (c.args or []))
    parked = set(ctx.state.parked)
    missing = [n for n in cps if n not in running and n not in parked]
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
        dep = _objects(ctx.rendered, ["Deployment"])[0]
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
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in ((n.status.conditions if n.status else None) or [])
        )
        if ready and n.metadata and n.metadata.name:
            out.append(n.metadata.name)
    return out


def plan_preflight(ctx: Context) -> list[str]:
    return [f"check: {line}" for line in _preflight_checks(ctx)]


def credentials(ctx: Context) -> str:
    objs = _objects(ctx.rendered, ["Secret"])
    if not objs:
        return "an existing Secret is used: nothing to apply"
    return "applied " + ", ".join(apply_objects(ctx.client, objs))


def plan_credentials(ctx: Context) -> list[str]:
    return _describe(_objects(ctx.rendered, ["Secret"])) or ["use the existing Secret"]


def deploy(ctx: Context) -> str:
    return "applied " + ", ".join(
        apply_objects(ctx.client, _objects(ctx.rendered, ["Deployment", "PodDisruptionBudget"]))
    )


def plan_deploy(ctx: Context) -> list[str]:
    return _describe(_objects(ctx.rendered, ["Deployment", "PodDisruptionBudget"]))


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
    ready = [p for p in pods if _ready(p)]
    view = leases.read_lease(ctx.client, namespace=ctx.lease_namespace, name=ctx.lease_name)
    holder_host = leases.holder_node(view.holder) if view.holder else ""
    holding = [p for p in ready if _name(p) == holder_host]
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
                return f"pod {_name(p)}: {cs.state.waiting.reason} {msg}".strip()
            if cs.state and cs.state.terminated and cs.state.terminated.exitCode:
                return f"pod {_name(p)}: exited {cs.state.terminated.exitCode}"
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
    names = {_name(p) for p in deployment_pods(ctx.client, ctx.component.name)}
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


def schedule_probe(client: Client, *, timeout: float = 60) -> float:
    """Create a pod without a node; seconds until the scheduler binds it. The pod is
    deleted at once (it tolerates every taint and asks for nothing)."""
    name = f"kubehoist-verify-{uuid.uuid4().hex[:6]}"
    labels: dict[str, Any] = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "kubehoist.io/verify": name}
    pod = Pod(
        metadata=ObjectMeta(name=name, namespace=NAMESPACE, labels=labels),
        spec=PodSpec(
            containers=[Container(name="verify", image="busybox:1.36", command=["true"])],
            restartPolicy="Never",
            tolerations=[Toleration(operator="Exists")],
            terminationGracePeriodSeconds=0,
        ),
    )
    client.create(pod)
    try:
        return leases.wait_until(
            f"probe pod {NAMESPACE}/{name} to be scheduled",
            lambda: bool(
                (got := client.get(Pod, name, namespace=NAMESPACE)).spec and got.spec.nodeName
            ),
            timeout=timeout,
        )
    finally:
        with absent_ok():
            client.delete(Pod, name, namespace=NAMESPACE, grace_period=0)


def reconcile_probe(client: Client, *, timeout: float = 60) -> float:
    """Create a Deployment with 0 replicas; seconds until its ReplicaSet exists."""
    name = f"kubehoist-verify-{uuid.uuid4().hex[:6]}"
    labels: dict[str, Any] = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "kubehoist.io/verify": name}
    dep = zero_replica_deployment(name, NAMESPACE, selector=labels)
    client.create(dep)
    try:
        return leases.wait_until(
            f"ReplicaSet of probe Deployment {NAMESPACE}/{name}",
            lambda: any(True for _ in client.list(ReplicaSet, namespace=NAMESPACE, labels=labels)),
            timeout=timeout,
        )
    finally:
        with contextlib.suppress(ApiError, KubehoistError):
            client.delete(Deployment, name, namespace=NAMESPACE, cascade=CascadeType.BACKGROUND)


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


# --- rollback phases --------------------------------------------------------------------
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
            if pod is None or not _ready(pod):
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
    pods = {_name(p) for p in _all_pods(ctx.client, comp)}
    with absent_ok():
        ctx.client.patch(Deployment, comp, {"spec": {"replicas": 0}}, namespace=NAMESPACE)
    for name in pods:
        with absent_ok():
            ctx.client.delete(Pod, name, namespace=NAMESPACE)

    def gone() -> bool:
        return not ({_name(p) for p in _all_pods(ctx.client, comp)} & pods)

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
                ctx.client.delete(res, _name(obj), namespace=NAMESPACE)
            if kind != "Pod":
                removed.append(f"{kind} {_name(obj)}")
    # Helper pods whose run was cut short (an API server away while their deletion was
    # retried): finished, doing nothing, but kubehoist's all the same.
    for obj in ctx.client.list(Pod, namespace=NAMESPACE, labels=helperpod.selector(comp)):
        with absent_ok():
            ctx.client.delete(Pod, _name(obj), namespace=NAMESPACE, grace_period=0)
        removed.append(f"helper Pod {_name(obj)}")
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


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
