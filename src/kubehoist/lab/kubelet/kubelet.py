"""The lab kubelet of one node: brings together the static pod source (the manifest
directory), the API source (pods bound to the node), one `PodWorker` per pod, status
reporting, and mirror pods. This is the class the lab supervisor runs per node.

Pods are keyed by UID: the API object's UID, or the config hash for a static pod.
A static pod's status is written to its mirror pod. A pod deleted gracefully in the
API is stopped with its grace period and then removed with grace 0; a manifest
removed from disk stops the static pod and then deletes its mirror pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubehoist.lab.binaries import Binaries
from kubehoist.lab.kubelet import images, runtime, static, status, volumes
from kubehoist.lab.kubelet.api import ApiFailure, KubeletApi
from kubehoist.lab.kubelet.cleanup import cleanup_node
from kubehoist.lab.kubelet.ipam import Ipam
from kubehoist.lab.kubelet.podspec import PodSpecError, parse_pod
from kubehoist.lab.kubelet.worker import NodeContext, PodWorker
from kubehoist.lab.spec import LabNode, LabSpec

log = logging.getLogger("kubehoist.lab.kubelet")

STATIC_POLL = 1.0
MIRROR_POLL = 2.0
RESYNC = 60.0
SHUTDOWN_GRACE_CAP = 10.0
STATUS_COALESCE = 0.1


@dataclass
class _Entry:
    source: str  # "static" or "api"
    uid: str  # API UID, or a static pod's config hash
    worker: PodWorker
    static_pod: static.StaticPod | None = None
    api_uid: str = ""  # the object whose status we patch (mirror pod for static pods)
    foreign_conditions: list[dict[str, Any]] = field(default_factory=list)
    conditions: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    delete_when_done: bool = False
    gone: bool = False  # the API object no longer exists
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.worker.pod.namespace

    @property
    def name(self) -> str:
        return self.worker.pod.name


class Kubelet:
    """Runs one lab node's pods until cancelled; then stops them all and cleans up."""

    def __init__(self, spec: LabSpec, node: LabNode, binaries: Binaries, kubeconfig: Path) -> None:
        self.spec = spec
        self.node = node
        self.binaries = binaries
        self.kubeconfig = kubeconfig
        self.entries: dict[str, _Entry] = {}
        self._api_pods: dict[str, dict[str, Any]] = {}
        self._mirror_wake = asyncio.Event()
        self._static_synced = False
        self._bad_manifests: set[tuple[Path, str]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._api: KubeletApi | None = None
        self._stopping = False  # shutting down: pods stop, their API objects stay

    @property
    def api(self) -> KubeletApi:
        assert self._api is not None, "Kubelet.run() has not started"
        return self._api

    @property
    def node_root(self) -> Path:
        return self.node.root(self.spec.root)

    # --- life -------------------------------------------------------------------------
    async def run(self) -> None:
        left = await cleanup_node(self.spec, self.node)
        runtime.archive_all_pod_logs(self.node_root)
        if left:
            log.info(
                "%s: removed leftovers of an earlier kubelet: %s", self.node.name, ", ".join(left)
            )
        support = self.spec.root / "run" / "kubelet-support"
        images.write_support_files(support)
        self._api = KubeletApi(self.kubeconfig, self.node.name)
        self.ctx = NodeContext(
            spec=self.spec,
            node=self.node,
            binaries=self.binaries,
            ipam=Ipam(self.node.pod_cidr),
            api=self.api,
            support_dir=support,
        )
        log.info("%s: lab kubelet started", self.node.name)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._static_loop())
                tg.create_task(self._api_loop())
                tg.create_task(self._mirror_loop())
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        log.info("%s: lab kubelet stopping %d pod(s)", self.node.name, len(self.entries))
        self._stopping = True
        for entry in self.entries.values():
            entry.worker.terminate(min(entry.worker.grace, SHUTDOWN_GRACE_CAP))
        waits = [e.worker.done.wait() for e in self.entries.values()]
        if waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE_CAP + 5):
                    await asyncio.gather(*waits)
        tasks = [t for e in self.entries.values() for t in e.tasks] + list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cleanup_node(self.spec, self.node)
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.close()
        log.info("%s: lab kubelet stopped", self.node.name)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_entry(self, entry: _Entry) -> None:
        self.entries[entry.uid] = entry
        entry.worker._on_change = entry.dirty.set
        entry.tasks.append(asyncio.create_task(entry.worker.run()))
        entry.tasks.append(asyncio.create_task(self._status_loop(entry)))
        entry.tasks.append(asyncio.create_task(self._finish_when_done(entry)))
        log.info(
            "%s: starting %s pod %s (%s)",
            self.node.name,
            entry.source,
            entry.worker.pod.key,
            entry.uid,
        )

    # --- status -----------------------------------------------------------------------
    async def _status_loop(self, entry: _Entry) -> None:
        while True:
            await entry.dirty.wait()
            entry.dirty.clear()
            if not await self._sync_status(entry):
                await asyncio.sleep(1.0)
                entry.dirty.set()
            await asyncio.sleep(STATUS_COALESCE)

    async def _sync_status(self, entry: _Entry) -> bool:
        """Send the worker's status; False if it should be retried later."""
        if entry.gone:
            return True
        if not entry.api_uid:
            return entry.source == "static"  # sent once the mirror pod exists
        snap = entry.worker.snapshot()
        entry.conditions = status.transition(
            entry.conditions, status.owned_conditions(snap), status.now()
        )
        body = status.build_status(
            snap, entry.conditions, foreign_conditions=entry.foreign_conditions
        )
        if entry.source == "static" and not any(
            c.get("type") == "PodScheduled" for c in body["conditions"]
        ):
            body["conditions"].insert(
                0,
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": status.timestamp(snap.start_time),
                },
            )
        try:
            await self.api.patch_status(entry.namespace, entry.name, entry.api_uid, body)
        except ApiFailure as exc:
            if exc.code in (404, 409, 422):
                return True  # the object is gone or is another one: nothing to report to
            log.warning("%s: status of %s: %s", self.node.name, entry.worker.pod.key, exc)
            return False
        return True

    async def _finish_when_done(self, entry: _Entry) -> None:
        await entry.worker.done.wait()
        # A pod that ran to completion stays (with its status) until it is deleted.
        await entry.worker.terminating.wait()
        await self._finish(entry)

    async def _finish(self, entry: _Entry) -> None:
        if self._stopping:
            return  # as a real kubelet going down: mirror pods and API pods stay
        for _ in range(3):
            if await self._sync_status(entry):
                break
            await asyncio.sleep(0.5)
        if entry.source == "static" and entry.api_uid:
            await self._delete_quietly(entry.namespace, entry.name, entry.api_uid)
        elif entry.delete_when_done and not entry.gone:
            await self._delete_quietly(entry.namespace, entry.name, entry.uid)
        self.entries.pop(entry.uid, None)
        for t in entry.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        runtime.archive_pod_logs(
            self.node_root, runtime.log_dir(self.node_root, entry.worker.pod, "x").parent
        )
        volumes.remove_pod_dir(self.node_root, entry.worker.pod.uid)
        log.info("%s: removed %s pod %s", self.node.name, entry.source, entry.worker.pod.key)
        self._mirror_wake.set()

    def _cached(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod of that name bound to this node, as last seen by the watch."""
        for pod in self._api_pods.values():
            meta = pod.get("metadata") or {}
            if meta.get("namespace") == namespace and meta.get("name") == name:
                return pod
        return None

    async def _delete_quietly(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod with grace 0, unless the pod of that name is now another one
        (the client cannot send a UID precondition, so the watch's view decides)."""
        for attempt in range(5):
            current = self._cached(namespace, name)
            if current is not None and (current.get("metadata") or {}).get("uid") != uid:
                return
            try:
                await self.api.delete_pod(namespace, name)
                return
            except ApiFailure as exc:
                log.warning("%s: deleting pod %s/%s: %s", self.node.name, namespace, name, exc)
                await asyncio.sleep(0.5 * (attempt + 1))

    # --- static pods ------------------------------------------------------------------
    def _static_entries(self) -> list[_Entry]:
        return [e for e in self.entries.values() if e.source == "static"]

    async def _static_loop(self) -> None:
        directory = self.node.manifests_dir(self.spec.root)
        while True:
            pods, errors = static.scan(directory, self.node.name)
            for err in errors:
                if (err.path, err.message) not in self._bad_manifests:
                    log.warning(
                        "%s: static pod manifest %s: %s", self.node.name, err.path, err.message
                    )
            self._bad_manifests = {(e.path, e.message) for e in errors}
            desired = {sp.uid: sp for sp in pods}
            for entry in self._static_entries():
                if entry.uid not in desired and not entry.worker.terminating.is_set():
                    log.info(
                        "%s: static pod %s removed or changed; stopping it",
                        self.node.name,
                        entry.worker.pod.key,
                    )
                    entry.worker.terminate()
            running_keys = {e.worker.pod.key for e in self._static_entries()}
            for uid, sp in desired.items():
                if uid in self.entries or sp.spec.key in running_keys:
                    continue  # running, or its old version is still stopping
                self._start_entry(
                    _Entry(
                        source="static", uid=uid, static_pod=sp, worker=PodWorker(self.ctx, sp.spec)
                    )
                )
                self._mirror_wake.set()
            self._static_synced = True
            await asyncio.sleep(STATIC_POLL)

    async def _mirror_loop(self) -> None:
        node_uid: str | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MIRROR_POLL):
                    await self._mirror_wake.wait()
            self._mirror_wake.clear()
            try:
                if node_uid is None:
                    node_uid = await self.api.node_uid()
                    if node_uid is None:
                        continue  # the Node is not registered yet
                for entry in self._static_entries():
                    if entry.worker.terminating.is_set() or entry.api_uid:
                        continue
                    await self._ensure_mirror(entry, node_uid)
                if self._static_synced:
                    await self._delete_orphan_mirrors()
            except ApiFailure as exc:
                log.warning("%s: mirror pods: %s", self.node.name, exc)

    async def _ensure_mirror(self, entry: _Entry, node_uid: str) -> None:
        assert entry.static_pod is not None
        # The node may only read pods bound to it: the watch's cache stands for a GET.
        existing = self._cached(entry.namespace, entry.name)
        if existing is not None:
            meta = existing.get("metadata") or {}
            if not static.is_mirror(existing):
                log.warning(
                    "%s: pod %s exists and is not a mirror pod; not replacing it",
                    self.node.name,
                    entry.worker.pod.key,
                )
                return
            if static.mirror_hash(existing) == entry.uid and not meta.get("deletionTimestamp"):
                entry.api_uid = str(meta.get("uid"))
                entry.foreign_conditions = list(
                    (existing.get("status") or {}).get("conditions") or []
                )
                entry.dirty.set()
                return
            await self._delete_quietly(entry.namespace, entry.name, str(meta.get("uid")))
            return  # created again once the watch has seen the deletion
        body = static.mirror_pod(entry.static_pod, node_name=self.node.name, node_uid=node_uid)
        try:
            created = await self.api.create_pod(body)
        except ApiFailure as exc:
            if exc.code == 409:
                self._mirror_wake.set()
                return
            raise
        entry.api_uid = str((created.get("metadata") or {}).get("uid"))
        log.info("%s: created mirror pod %s", self.node.name, entry.worker.pod.key)
        entry.dirty.set()

    async def _delete_orphan_mirrors(self) -> None:
        wanted = {(e.namespace, e.name, e.uid) for e in self._static_entries()}
        for uid, pod in list(self._api_pods.items()):
            if not static.is_mirror(pod):
                continue
            meta = pod.get("metadata") or {}
            key = (meta.get("namespace"), meta.get("name"), static.mirror_hash(pod))
            if key in wanted:
                continue
            keys = {(e.namespace, e.name) for e in self._static_entries()}
            if key[:2] in keys and any(e.api_uid == uid for e in self._static_entries()):
                continue
            log.info("%s: deleting orphan mirror pod %s/%s", self.node.name, key[0], key[1])
            self._api_pods.pop(uid, None)
            await self._delete_quietly(str(key[0]), str(key[1]), uid)

    # --- API pods ---------------------------------------------------------------------
    async def _api_loop(self) -> None:
        while True:
            try:
                pods = await self.api.list_pods()
                seen = set()
                for pod in pods:
                    seen.add(str(pod["metadata"]["uid"]))
                    self._handle("MODIFIED", pod)
                for uid in list(self._api_pods):
                    if uid not in seen:
                        self._handle("DELETED", self._api_pods[uid])
                for entry in list(self.entries.values()):
                    if entry.source == "api" and entry.uid not in seen and not entry.gone:
                        self._handle(
                            "DELETED",
                            {
                                "metadata": {
                                    "uid": entry.uid,
                                    "namespace": entry.namespace,
                                    "name": entry.name,
                                }
                            },
                        )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESYNC):
                        async for op, pod in self.api.watch_pods():
                            self._handle(op, pod)
            except ApiFailure as exc:
                log.warning("%s: watching pods: %s", self.node.name, exc)
                await asyncio.sleep(1.0)

    def _handle(self, op: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if op == "DELETED":
            self._api_pods.pop(uid, None)
        else:
            self._api_pods[uid] = pod
        if static.is_mirror(pod):
            self._handle_mirror(op, pod, uid, namespace, name)
            return
        entry = self.entries.get(uid)
        if op == "DELETED":
            if entry is not None and not entry.gone:
                entry.gone = True
                entry.worker.terminate(min(entry.worker.grace, 2.0))
            return
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if entry is not None:
                entry.delete_when_done = True
                entry.worker.terminate(None if grace is None else float(grace))
            else:
                self._spawn(self._delete_quietly(namespace, name, uid))
            return
        if entry is not None:
            entry.foreign_conditions = list((pod.get("status") or {}).get("conditions") or [])
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        try:
            spec = parse_pod(pod, node_name=self.node.name)
        except (PodSpecError, KeyError, TypeError, ValueError) as exc:
            self._spawn(self._reject(namespace, name, uid, str(exc)))
            return
        labels = tuple(sorted((meta.get("labels") or {}).items()))
        entry = _Entry(
            source="api",
            uid=uid,
            api_uid=uid,
            worker=PodWorker(self.ctx, spec, labels=labels),
            foreign_conditions=list((pod.get("status") or {}).get("conditions") or []),
        )
        self._start_entry(entry)

    def _handle_mirror(
        self, op: str, pod: dict[str, Any], uid: str, namespace: str, name: str
    ) -> None:
        entry = next((e for e in self._static_entries() if e.api_uid == uid), None)
        if op == "DELETED":
            if entry is not None:
                entry.api_uid = ""
                self._mirror_wake.set()
            return
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            # A mirror pod deleted through the API: remove it now; it is recreated, and
            # the static pod keeps running (as with the real kubelet).
            self._spawn(self._delete_quietly(namespace, name, uid))
            return
        if entry is not None:
            entry.foreign_conditions = list((pod.get("status") or {}).get("conditions") or [])

    async def _reject(self, namespace: str, name: str, uid: str, message: str) -> None:
        log.warning("%s: cannot run pod %s/%s: %s", self.node.name, namespace, name, message)
        body = {"phase": "Failed", "reason": "UnsupportedByLab", "message": message}
        with contextlib.suppress(ApiFailure):
            await self.api.patch_status(namespace, name, uid, body)


__all__ = ["Kubelet"]
