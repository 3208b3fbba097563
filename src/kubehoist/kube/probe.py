"""The reconcile probe: creates a Deployment with 0 replicas every `interval` and
times how long until its ReplicaSet exists — the deployment controller, inside
kube-controller-manager, is what makes it. A gap in that answer is what a user feels
when no controller manager leads.

Probe objects carry the label `kubehoist.dev/probe=<run>` in their own namespace and
are deleted at the end (their ReplicaSets go with them through the garbage collector).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Namespace
from lightkube.types import CascadeType

from kubehoist.measure import Sample

PROBE_LABEL = "kubehoist.dev/probe"
DEFAULT_NAMESPACE = "kubehoist-probe"


def zero_replica_deployment(
    name: str,
    namespace: str,
    *,
    selector: dict[str, str],
    labels: dict[str, str] | None = None,
    image: str = "busybox:1.36",
) -> Deployment:
    """A Deployment of 0 replicas: only the deployment controller acts on it (it makes
    its ReplicaSet), no pod is ever started. Its pod template carries `selector`, its
    metadata `labels` (default: the selector)."""
    return Deployment(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=labels or dict(selector)),
        spec=DeploymentSpec(
            replicas=0,
            selector=LabelSelector(matchLabels=selector),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=selector),
                spec=PodSpec(containers=[Container(name="c", image=image)]),
            ),
        ),
    )


def probe_deployment(name: str, namespace: str, run: str) -> Deployment:
    labels = {PROBE_LABEL: run, "app.kubernetes.io/managed-by": "kubehoist"}
    selector = {PROBE_LABEL: run, "kubehoist.dev/probe-object": name}
    return zero_replica_deployment(name, namespace, selector=selector, labels=labels)


@dataclass
class ReconcileProbe:
    client: AsyncClient
    namespace: str = DEFAULT_NAMESPACE
    interval: float = 0.25
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _sent: dict[str, tuple[int, float]] = field(default_factory=dict)
    _seen: dict[str, float] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _watching: asyncio.Event = field(default_factory=asyncio.Event)
    create_errors: int = 0
    """Probe objects the API server did not take (not samples)."""
    rewatches: int = 0
    """Times the ReplicaSet watch broke and was listed again."""

    async def _ensure_namespace(self) -> None:
        try:
            await self.client.create(Namespace(metadata=ObjectMeta(name=self.namespace)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise

    async def _watch(self) -> None:
        """LIST then WATCH this run's ReplicaSets; again after a broken watch (an API
        server restarting behind the endpoint). A ReplicaSet first seen by a relist
        counts as made then: later than it was, never earlier."""
        labels: dict[str, Any] = {PROBE_LABEL: self.run}
        while True:
            try:
                rs_list = self.client.list(ReplicaSet, namespace=self.namespace, labels=labels)
                async for rs in rs_list:
                    self._record(rs)
                version = rs_list.resourceVersion
                self._watching.set()
                async for _event, rs in self.client.watch(
                    ReplicaSet, namespace=self.namespace, labels=labels, resource_version=version
                ):
                    self._record(rs)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken watch or an API server away: list again
                self.rewatches += 1
                await asyncio.sleep(0.2)

    def _record(self, rs: ReplicaSet) -> None:
        now = time.monotonic()
        for ref in (rs.metadata.ownerReferences if rs.metadata else None) or []:
            if ref.kind == "Deployment" and ref.name not in self._seen:
                self._seen[ref.name] = now

    async def _create_loop(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            name = f"probe-{self.run}-{seq:05d}"
            sent = time.monotonic()
            self._sent[name] = (seq, sent)
            try:
                await self.client.create(probe_deployment(name, self.namespace, self.run))
            except (ApiError, OSError, httpx2.HTTPError):
                # Never reached the controllers (an API server away): it measures nothing
                # about them, so it is not a sample; counted apart.
                del self._sent[name]
                self.create_errors += 1
            seq += 1
            next_at += self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), timeout=max(0.0, next_at - time.monotonic())
                )

    async def __aenter__(self) -> ReconcileProbe:
        await self._ensure_namespace()
        self._watch_task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._watching.wait(), timeout=30)
        self._create_task = asyncio.create_task(self._create_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, *, drain: float = 0.0) -> None:
        """Stop creating; wait up to `drain` seconds for the last answers."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._create_task
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and len(self._seen) < len(self._sent):
            await asyncio.sleep(0.1)
        self._watch_task.cancel()
        with contextlib.suppress(BaseException):
            await self._watch_task

    def samples(self) -> list[Sample]:
        return sorted(
            (
                Sample(seq=seq, sent=sent, reconciled=self._seen.get(name))
                for name, (seq, sent) in self._sent.items()
            ),
            key=lambda s: s.seq,
        )

    async def cleanup(self) -> None:
        """Delete this run's probe objects."""
        with contextlib.suppress(ApiError):
            async for dep in self.client.list(
                Deployment, namespace=self.namespace, labels={PROBE_LABEL: self.run}
            ):
                if dep.metadata and dep.metadata.name:
                    await self.client.delete(
                        Deployment,
                        dep.metadata.name,
                        namespace=self.namespace,
                        cascade=CascadeType.BACKGROUND,
                    )
