"""Small pure pod-spec mutators that turn a static pod's spec into a Deployment's.

The shape follows kubeadm's former self-hosting phase: start from the static pod's
spec and apply a list of mutators in order, each a pure function of (spec, context)
returning a new spec plus what it has to tell the user. Each one does one thing, so
each can be read and tested alone, and a new one slots into `MUTATORS`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from kubehoist.constants import CREDENTIALS_DIR, NONROOT_UID, selector_labels
from kubehoist.manifest import StaticPod
from kubehoist.render.options import RenderOptions

PodSpec: TypeAlias = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PodContext:
    """Everything the mutators may look at; computed once, before they run."""

    pod: StaticPod
    options: RenderOptions
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    port: int
    image: str
    secret_name: str | None
    """The credentials Secret to mount (None in image mode)."""
    writable_dirs: tuple[str, ...]


Mutator: TypeAlias = Callable[[PodSpec, PodContext], tuple[PodSpec, tuple[str, ...]]]

CREDENTIALS_VOLUME = "kubehoist-credentials"
SECRET_MODE = 0o440
"""Owner and group (fsGroup) may read; nobody may write."""

_POD_FIELDS = ("containers", "volumes", "terminationGracePeriodSeconds", "imagePullSecrets")
_CONTAINER_FIELDS = (
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "resources",
    "volumeMounts",
    "workingDir",
    "terminationMessagePolicy",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
)


def keep_component_container(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """Only the component's container, and only the fields a Deployment should inherit."""
    warnings = [
        f"{ctx.pod.source}: container {name!r} is not carried into the Deployment"
        for name in ctx.pod.other_containers
    ]
    if spec.get("initContainers"):
        warnings.append(f"{ctx.pod.source}: spec.initContainers are not carried")
    container = {
        k: copy.deepcopy(v) for k, v in ctx.pod.container.items() if k in _CONTAINER_FIELDS
    }
    out = {k: copy.deepcopy(v) for k, v in spec.items() if k in _POD_FIELDS}
    out["containers"] = [container]
    return out, tuple(warnings)


def set_command(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """The rewritten command/args and the image the pods run."""
    out = copy.deepcopy(spec)
    container = out["containers"][0]
    container.pop("command", None)
    container.pop("args", None)
    if ctx.command is not None:
        container["command"] = list(ctx.command)
    if ctx.args is not None:
        container["args"] = list(ctx.args)
    container["image"] = ctx.image
    return out, ()


HTTP2_HEALTH_ENV: tuple[tuple[str, str], ...] = (
    ("HTTP2_READ_IDLE_TIMEOUT_SECONDS", "5"),
    ("HTTP2_PING_TIMEOUT_SECONDS", "3"),
)
"""client-go's HTTP/2 connection health check (k8s.io/apimachinery util/net): a PING
after this many seconds without a frame, the connection closed when it is not answered
within the second. Upstream's defaults are 30 and 15."""


def bound_dead_connections(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """A connection to an API server that went silent is dropped within 8 s, not 45 s.

    A static pod talks to its own node's API server; the Deployment's pods go through the
    load-balanced endpoint, where every HTTP/2 connection is pinned to one API server.
    When that server's node drops off the network without a FIN, client-go leaves the
    connection only when its health check fails: 30 s without a frame, then 15 s without
    an answer to a PING. Measured (bench/chaos.py, node-netcut): a standby pinned to a
    cut-off control plane could not read the Lease for 44 s, three lease durations; a
    leader pinned so would miss its renew deadline (10 s) and exit. 5 + 3 s leaves a
    dead connection within the default renew deadline, while a live one (renewals every
    2 s) is never pinged. Values the static pod already sets are kept.
    """
    out = copy.deepcopy(spec)
    container = out["containers"][0]
    env = list(container.get("env") or [])
    have = {e.get("name") for e in env if isinstance(e, dict)}
    env.extend({"name": k, "value": v} for k, v in HTTP2_HEALTH_ENV if k not in have)
    container["env"] = env
    return out, ()


def drop_host_paths(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """Remove hostPath volumes and their mounts: a Deployment's pods are not on that node."""
    out = copy.deepcopy(spec)
    dropped = [v for v in out.get("volumes") or [] if "hostPath" in v]
    names = {v["name"] for v in dropped}
    out["volumes"] = [v for v in out.get("volumes") or [] if v["name"] not in names]
    container = out["containers"][0]
    container["volumeMounts"] = [
        m for m in container.get("volumeMounts") or [] if m.get("name") not in names
    ]
    warnings: tuple[str, ...] = ()
    if dropped:
        listed = ", ".join(f"{v['name']} ({v['hostPath'].get('path')})" for v in dropped)
        warnings = (
            f"{ctx.pod.source}: hostPath volumes dropped (a Deployment's pods are on other "
            f"nodes; the files the flags need come from the credentials): {listed}",
        )
    return out, warnings


def mount_credentials(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """The credentials Secret, read-only with a tight mode (image mode: baked in instead)."""
    if ctx.secret_name is None:
        return spec, ()
    out = copy.deepcopy(spec)
    out.setdefault("volumes", []).append(
        {
            "name": CREDENTIALS_VOLUME,
            "secret": {"secretName": ctx.secret_name, "defaultMode": SECRET_MODE},
        }
    )
    out["containers"][0].setdefault("volumeMounts", []).append(
        {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True}
    )
    return out, ()


def mount_writable_dirs(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """An emptyDir for each path the process writes (the root filesystem is read-only)."""
    if not ctx.writable_dirs:
        return spec, ()
    out = copy.deepcopy(spec)
    container = out["containers"][0]
    warnings = []
    for i, path in enumerate(ctx.writable_dirs):
        name = f"kubehoist-writable-{i}"
        out.setdefault("volumes", []).append({"name": name, "emptyDir": {}})
        container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})
        warnings.append(
            f"{path} is written by the component: it is an emptyDir in the Deployment's pods "
            "(its content is lost with the pod)"
        )
    return out, tuple(warnings)


def _probe(
    source: Mapping[str, Any] | None, *, path: str, port: int, defaults: Mapping[str, int]
) -> dict[str, Any]:
    probe: dict[str, Any] = dict(defaults)
    if isinstance(source, dict):
        for key in (
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "successThreshold",
        ):
            if isinstance(source.get(key), int):
                probe[key] = source[key]
        http = source.get("httpGet")
        if isinstance(http, dict) and isinstance(http.get("path"), str) and http["path"]:
            path = http["path"]
    probe["httpGet"] = {"path": path, "port": port, "scheme": "HTTPS"}
    return probe


_STARTUP = {
    "initialDelaySeconds": 10,
    "periodSeconds": 10,
    "timeoutSeconds": 15,
    "failureThreshold": 24,
}
_LIVENESS = {
    "initialDelaySeconds": 10,
    "periodSeconds": 10,
    "timeoutSeconds": 15,
    "failureThreshold": 8,
}
_READINESS = {"periodSeconds": 10, "timeoutSeconds": 15, "failureThreshold": 3}


def set_ports_and_probes(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """The secure port as a named container port, probed over HTTPS on the pod's IP."""
    out = copy.deepcopy(spec)
    container = out["containers"][0]
    source = ctx.pod.container
    probes = ctx.pod.component.probes
    container["ports"] = [{"name": "https", "containerPort": ctx.port, "protocol": "TCP"}]
    container["startupProbe"] = _probe(
        source.get("startupProbe"), path=probes.startup, port=ctx.port, defaults=_STARTUP
    )
    container["livenessProbe"] = _probe(
        source.get("livenessProbe"), path=probes.liveness, port=ctx.port, defaults=_LIVENESS
    )
    container["readinessProbe"] = _probe(
        source.get("readinessProbe"), path=probes.readiness, port=ctx.port, defaults=_READINESS
    )
    return out, ()


def set_network(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """Pod network by default; DNS from the node, not from the cluster DNS it keeps alive."""
    out = copy.deepcopy(spec)
    out["hostNetwork"] = ctx.options.host_network
    # Cluster DNS runs as a Deployment that this very component reconciles: resolving
    # the API endpoint through it would add the circular dependency kubehoist removes.
    out["dnsPolicy"] = "Default"
    warnings: tuple[str, ...] = ()
    if ctx.options.host_network:
        warnings = (
            "--host-network: the pods share the node's network; the Pod Security level "
            "drops from restricted to privileged",
        )
    return out, warnings


def set_scheduling(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """Critical priority, every taint tolerated, spread across nodes (or zones)."""
    out = copy.deepcopy(spec)
    out["priorityClassName"] = "system-node-critical"
    out["tolerations"] = [{"operator": "Exists"}]
    if ctx.options.node_selector:
        out["nodeSelector"] = dict(ctx.options.node_selector)
    selector = {"matchLabels": selector_labels(ctx.pod.component.name)}
    out["affinity"] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": selector,
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }
    if ctx.options.spread == "zone":
        out["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
            }
        ]
    return out, ()


def harden(spec: PodSpec, ctx: PodContext) -> tuple[PodSpec, tuple[str, ...]]:
    """Restricted Pod Security: non-root, read-only root, no capabilities, no token."""
    out = copy.deepcopy(spec)
    out["automountServiceAccountToken"] = False
    out["enableServiceLinks"] = False
    out["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    out["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return out, ()


MUTATORS: tuple[Mutator, ...] = (
    keep_component_container,
    set_command,
    bound_dead_connections,
    drop_host_paths,
    mount_credentials,
    mount_writable_dirs,
    set_ports_and_probes,
    set_network,
    set_scheduling,
    harden,
)


def apply(
    spec: Mapping[str, Any], ctx: PodContext, mutators: tuple[Mutator, ...] = MUTATORS
) -> tuple[PodSpec, tuple[str, ...]]:
    """Run the mutators in order over a copy of `spec`."""
    current: PodSpec = copy.deepcopy(dict(spec))
    warnings: list[str] = []
    for mutate in mutators:
        current, said = mutate(current, ctx)
        warnings.extend(said)
    return current, tuple(warnings)
