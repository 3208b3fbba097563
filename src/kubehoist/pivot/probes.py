"""The probes pivot's `verify` ends with: the controllers work (a 0-replica Deployment
gets its ReplicaSet), the scheduler works (a pod gets a node)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Container, PodSpec, Toleration
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod
from lightkube.types import CascadeType

from kubehoist.constants import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases
from kubehoist.kube.client import absent_ok
from kubehoist.kube.probe import zero_replica_deployment
from kubehoist.pivot.context import NAMESPACE


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
