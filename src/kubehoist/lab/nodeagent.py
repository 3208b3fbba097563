"""Node registration and heartbeats, as a kubelet does them: the Node object with its
podCIDR and addresses, the Ready condition, and the node Lease renewed every 10 s, so
the real node-lifecycle controller keeps the node Ready and untainted.

Each agent speaks with its node's own identity (`system:node:<name>`, from the node's
kubelet.conf), so the API server's Node authorizer and NodeRestriction apply as on a
real cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import platform
import uuid

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import NodeSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from kubehoist.lab.spec import LabNode, LabSpec

log = logging.getLogger(__name__)

LEASE_DURATION = 40
RENEW_INTERVAL = 10.0
STATUS_INTERVAL = 60.0
NODE_LEASE_NS = "kube-node-lease"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(spec: LabSpec, node: LabNode) -> Node:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    return Node(
        metadata=ObjectMeta(name=node.name, labels=labels),
        spec=NodeSpec(podCIDR=node.pod_cidr, podCIDRs=[node.pod_cidr]),
    )


def status_patch(spec: LabSpec, node: LabNode, boot_id: str) -> dict[str, object]:
    now = _stamp()

    def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
        }

    resources = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "status": {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "lab kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, node.netns).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, node.netns)),
                "bootID": boot_id,
                "kernelVersion": platform.release(),
                "osImage": "kubehoist lab",
                "containerRuntimeVersion": "kubehoist-lab://0.1",
                "kubeletVersion": spec.kubernetes_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
    }


class NodeAgent:
    def __init__(self, spec: LabSpec, node: LabNode, client: AsyncClient) -> None:
        self.spec = spec
        self.node = node
        self.client = client
        self.boot_id = str(uuid.uuid4())
        self.registered = asyncio.Event()

    async def register(self) -> None:
        try:
            await self.client.create(node_object(self.spec, self.node))
            log.info("node %s registered", self.node.name)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        await self._post_status()
        await self._renew_lease()
        self.registered.set()

    async def _post_status(self) -> None:
        await self.client.patch(
            Node.Status, self.node.name, status_patch(self.spec, self.node, self.boot_id)
        )

    async def _renew_lease(self) -> None:
        name = self.node.name
        renew = _now()
        try:
            lease = await self.client.get(Lease, name, namespace=NODE_LEASE_NS)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            node = await self.client.get(Node, name)
            assert node.metadata is not None and node.metadata.uid is not None
            owner = OwnerReference(apiVersion="v1", kind="Node", name=name, uid=node.metadata.uid)
            await self.client.create(
                Lease(
                    metadata=ObjectMeta(
                        name=name, namespace=NODE_LEASE_NS, ownerReferences=[owner]
                    ),
                    spec=LeaseSpec(
                        holderIdentity=name, leaseDurationSeconds=LEASE_DURATION, renewTime=renew
                    ),
                )
            )
            return
        assert lease.spec is not None
        lease.spec.renewTime = renew
        lease.spec.holderIdentity = name
        lease.spec.leaseDurationSeconds = LEASE_DURATION
        await self.client.replace(lease)

    async def run(self) -> None:
        """Register, then keep the node's heartbeats going until cancelled."""
        while True:
            try:
                await self.register()
                break
            except Exception as exc:  # API errors, transport errors while the API starts
                log.warning("node %s: registration failed: %r; retrying", self.node.name, exc)
                await asyncio.sleep(2)
        last_status = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(RENEW_INTERVAL)
            try:
                await self._renew_lease()
                if asyncio.get_running_loop().time() - last_status >= STATUS_INTERVAL:
                    await self._post_status()
                    last_status = asyncio.get_running_loop().time()
            except Exception as exc:
                log.warning("node %s: heartbeat failed: %r", self.node.name, exc)
