"""PURE: the guard's static pod manifest and the minimal RBAC it needs. No I/O.

The guard runs as a static pod on every control-plane node, so the kubelet runs it
with no scheduler and no controller manager. It mounts only two host directories:
the kubelet's manifests directory (to put a parked manifest back and park it again)
and `/etc/kubernetes/kubehoist` (the parked copies, the fallback marker, and the
guard's own kubeconfig `guard.conf`). `/etc/kubernetes/pki` is never mounted.

It authenticates as `kubehoist:guard` (group `kubehoist:guards`) with a client
certificate signed by the cluster CA, in `/etc/kubernetes/kubehoist/guard.conf` (see
docs/guard.md for why not the node's own credentials).
"""

from __future__ import annotations

from typing import Any, Final

from kubehoist import __version__
from kubehoist.components import Component
from kubehoist.constants import object_labels

GUARD_USER: Final = "kubehoist:guard"
GUARD_GROUP: Final = "kubehoist:guards"
KUBECONFIG: Final = "/etc/kubernetes/kubehoist/guard.conf"
MANIFESTS_DIR: Final = "/etc/kubernetes/manifests"
STATE_DIR: Final = "/etc/kubernetes/kubehoist"
HOST_ROOT: Final = "/host-root"
DEFAULT_IMAGE: Final = f"ghcr.io/kubehoist/kubehoist:{__version__}"
DEFAULT_METRICS_PORT: Final = 10360


def pod_name(component: Component) -> str:
    return f"kubehoist-guard-{component.name}"


def static_pod(
    component: Component,
    *,
    image: str = DEFAULT_IMAGE,
    metrics_port: int = DEFAULT_METRICS_PORT,
    grace_s: float | None = None,
    settle_s: float | None = None,
    reaper: bool = True,
    manifests_dir: str = MANIFESTS_DIR,
) -> dict[str, Any]:
    """The guard's static pod manifest for `component`."""
    args = [
        "guard",
        "run",
        f"--component={component.name}",
        f"--manifests-dir={manifests_dir}",
        f"--kubeconfig={KUBECONFIG}",
        f"--metrics-port={metrics_port}",
    ]
    if grace_s is not None:
        args.append(f"--grace={grace_s:g}")
    if settle_s is not None:
        args.append(f"--settle={settle_s:g}")
    if not reaper:
        args.append("--no-reaper")
    labels = object_labels(component.name, extra={"component": pod_name(component)})
    # Never selected as the component's own pods (kubehoist's selector uses name=<component>).
    labels["app.kubernetes.io/name"] = pod_name(component)
    labels["tier"] = "control-plane"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(component), "namespace": "kube-system", "labels": labels},
        "spec": {
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "priority": 2000001000,
            "automountServiceAccountToken": False,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "guard",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["kubehoist"],
                    "args": args,
                    "env": [
                        {
                            "name": "NODE_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                        }
                    ],
                    "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}},
                    "livenessProbe": {
                        "httpGet": {"host": "127.0.0.1", "path": "/metrics", "port": metrics_port},
                        "periodSeconds": 10,
                        "failureThreshold": 6,
                    },
                    "volumeMounts": [
                        {"name": "manifests", "mountPath": manifests_dir},
                        {"name": "kubehoist", "mountPath": STATE_DIR},
                        # The node's `/`, read-only: its crictl clears the kubelet's memory
                        # of a parked static pod before a fallback puts it back.
                        {"name": "host-root", "mountPath": HOST_ROOT, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "manifests",
                    "hostPath": {"path": manifests_dir, "type": "DirectoryOrCreate"},
                },
                {
                    "name": "kubehoist",
                    "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"},
                },
                {"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}},
            ],
        },
    }


def rbac(component: Component, *, namespace: str = "kube-system") -> list[dict[str, Any]]:
    """Role and RoleBinding: read Leases, pods and Deployments in `namespace`; update only
    the guards' Lease and the component's Lease; create the guards' Lease; create Events."""
    name = f"kubehoist:guard:{component.name}"
    labels = object_labels(component.name)
    guard_lease = f"kubehoist-guard-{component.name}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": sorted({guard_lease, component.lease_name}),
                "verbs": ["update"],
            },
            # create cannot be limited by resourceNames (the name is not known to RBAC
            # before the object exists); the guard creates only its own Lease.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GUARD_GROUP}
        ],
    }
    return [role, binding]
