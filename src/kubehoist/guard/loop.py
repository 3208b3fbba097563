"""The guard's runner: every `interval` (1 s) it reads what it needs with requests
whose number and size do not grow with the cluster (one GET of the component's Lease;
its pods from `guard/podcache.py`'s watches; every `guard_retry` a GET and an update of
the guards' own Lease, `guard/guardlease.py`), builds a `Snapshot`, asks `decide`, and
performs the action through the pieces pivot uses (`LocalNodeFiles` on this node's
manifests, `leases.release`). Its configuration is a `GuardConfig` (guard/config.py).

Every action is recorded (history, a JSON log line, a Kubernetes Event on the
Deployment, Prometheus counters). A failed read makes the snapshot unreachable: the
engine then does nothing, which is the point.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod

from kubehoist.constants import guard_lease_name, object_labels
from kubehoist.election import LeaseRecord, Validity
from kubehoist.errors import KubehoistError
from kubehoist.guard.config import GuardConfig, gist, json_line, marker_path, pod_selectors
from kubehoist.guard.decide import (
    Baseline,
    Decision,
    Done,
    Kind,
    LeaseTiming,
    Manifest,
    PodView,
    Snapshot,
    decide,
    holder_pods,
)
from kubehoist.guard.guardlease import GuardLease
from kubehoist.guard.metrics import GuardMetrics
from kubehoist.guard.nudge import MIN_GAP_S
from kubehoist.guard.observe import pod_view
from kubehoist.guard.podcache import PodCache
from kubehoist.kube import leases
from kubehoist.kube.client import get_or_none
from kubehoist.kube.errors import Call, NotFoundError, api_errors
from kubehoist.kube.objects import lease_record
from kubehoist.nodefiles.parking import LocalNodeFiles

GONE_RETENTION_S = 120.0
"""How long the last state of a vanished pod is kept (its final status is evidence)."""


class Guard:
    """One guard: `step()` is one round (observe, decide, act); `run()` loops."""

    def __init__(
        self,
        config: GuardConfig,
        *,
        client: Client,
        metrics: GuardMetrics | None = None,
        log: Callable[[dict[str, Any]], None] = json_line,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        identity: str | None = None,
        server: str = "the API server",
        pod_cache: PodCache | None = None,
    ) -> None:
        self.config = config
        self.pod_cache = pod_cache
        """The component's pods kept by watches (guard/podcache.py); rounds LIST while it
        is not in sync (or when there is none)."""
        self.server = server
        self.client = client
        self.metrics = (
            metrics if metrics is not None else GuardMetrics(config.component.name, config.node)
        )
        self.metrics.grace.set(config.policy.grace_s)
        self.log = log
        self.clock = clock
        self.wall = wall
        self.identity = identity or f"{config.node}_{uuid.uuid4()}"
        self.files = LocalNodeFiles(config.manifests_dir, host_root=config.host_root)
        self.history: list[Done] = []
        self.timing: LeaseTiming | None = None
        self.baseline: Baseline | None = None
        self.pods: dict[str, PodView] = {}
        self.gone_at: dict[str, float] = {}
        self.ready_since: float | None = None
        self.guard_lease = GuardLease(
            client,
            namespace=config.namespace,
            name=guard_lease_name(config.component.name),
            identity=self.identity,
            labels=object_labels(config.component.name),
            duration_s=config.guard_lease_duration_s,
            retry_s=config.guard_retry_s,
            renew_deadline_s=config.policy.guard_renew_deadline_s,
            wall=wall,
            server=server,
        )
        self.last_decision: Decision | None = None
        self.last_step_at: float | None = None
        self.last_error: dict[str, str] = {}

    # -- reads --------------------------------------------------------------------------
    def _server(self) -> str:
        return self.server

    def _read_lease(self) -> LeaseRecord | None:
        c = self.config
        lease_ns, lease_name = c.component.lease_namespace, c.component.lease_name
        call = Call(verb="get", resource="leases", namespace=lease_ns, name=lease_name)
        try:
            with api_errors(call, server=self._server()):
                obj = self.client.get(Lease, lease_name, namespace=lease_ns)
        except NotFoundError:
            return None
        return lease_record(obj.to_dict())

    def pod_selectors(self) -> tuple[dict[str, Any], ...]:
        return pod_selectors(self.config.component.name)

    def _read_pods(self) -> list[dict[str, Any]]:
        if self.pod_cache is not None and (cached := self.pod_cache.snapshot()) is not None:
            return cached
        c = self.config
        seen: dict[str, dict[str, Any]] = {}
        for labels in self.pod_selectors():
            call = Call(verb="list", resource="pods", namespace=c.namespace)
            with api_errors(call, server=self._server()):
                for pod in self.client.list(
                    Pod, namespace=c.namespace, labels=dict(labels), chunk_size=100
                ):
                    obj = pod.to_dict()
                    meta = obj.get("metadata") or {}
                    seen[str(meta.get("uid") or meta.get("name"))] = obj
        return list(seen.values())

    def _manifest_state(self) -> tuple[Manifest, bool]:
        name = self.config.manifest_name
        if (self.files.manifests_dir / name).exists():
            state = Manifest.IN_PLACE
        elif (self.files.park_dir / name).exists():
            state = Manifest.PARKED
        else:
            state = Manifest.ABSENT
        return state, marker_path(self.files, name).exists()

    # -- the guards' own Lease (guard/guardlease.py) ----------------------------------
    @property
    def guard_renewed_at(self) -> float | None:
        return self.guard_lease.renewed_at

    def coordinate(self, now: float) -> None:
        """Acquire or renew the guards' Lease (client-go's rules, our clock)."""
        try:
            self.guard_lease.coordinate(now)
            self.last_error.pop("guard-lease-error", None)
        except KubehoistError as exc:
            self._error("guard-lease-error", exc.message)

    # -- observation --------------------------------------------------------------------
    def observe(self) -> Snapshot:
        """One round of reads, folded into what the guard remembers."""
        now = self.clock()
        c = self.config
        manifest, marker = self._manifest_state()
        try:
            lease = self._read_lease()
            objs = self._read_pods()
        except KubehoistError as exc:
            self._error("read-error", exc.message)
            self.metrics.api_reachable.set(0)
            self.coordinate(now)
            timing = self.timing or LeaseTiming(
                lease=None, first_seen=now, changed_at=None, renewed_at=now
            )
            return Snapshot(
                taken_at=now,
                api_reachable=False,
                node=c.node,
                timing=timing,
                pods=tuple(self.pods.values()),
                manifest=manifest,
                fallback_marker=marker,
                guard_renewed_at=self.guard_renewed_at,
                ready_since=None,
                baseline=self.baseline,
            )
        self.metrics.api_reachable.set(1)
        if self.last_error.pop("read-error", None) is not None:
            self.log({"event": "reads-resumed", **self._tags()})
        seen = self.clock()  # after the reads: a later "changed at" only makes us slower
        self._fold_pods(objs, seen)
        self._fold_lease(lease, seen)
        self.coordinate(now)
        if any(p.can_take_over for p in self.pods.values()):
            self.ready_since = self.ready_since if self.ready_since is not None else seen
        else:
            self.ready_since = None
        assert self.timing is not None
        return Snapshot(
            taken_at=now,
            api_reachable=True,
            node=c.node,
            timing=self.timing,
            pods=tuple(self.pods.values()),
            manifest=manifest,
            fallback_marker=marker,
            guard_renewed_at=self.guard_renewed_at,
            ready_since=self.ready_since,
            baseline=self.baseline,
        )

    def _fold_pods(self, objs: list[dict[str, Any]], now: float) -> None:
        fresh = {
            str((o.get("metadata") or {}).get("uid") or ""): pod_view(
                o, component=self.config.component.name
            )
            for o in objs
        }
        names = {v.name for v in fresh.values()}
        for uid, old in self.pods.items():
            if uid in fresh or old.name in names:
                # Still there, or replaced by a new object of the same name (a static
                # pod's mirror pod made again): the old one's memory would only make
                # the holder's pod ambiguous.
                continue
            gone_at = self.gone_at.setdefault(uid, now)
            if now - gone_at < GONE_RETENTION_S:
                fresh[uid] = replace(old, gone=True)
        self.gone_at = {u: t for u, t in self.gone_at.items() if u in fresh}
        self.pods = fresh

    def _fold_lease(self, lease: LeaseRecord | None, now: float) -> None:
        old = self.timing
        if old is None:
            self.timing = LeaseTiming(lease=lease, first_seen=now, changed_at=None, renewed_at=now)
        elif lease is None:
            if old.lease is not None:
                self.timing = LeaseTiming(
                    lease=None, first_seen=now, changed_at=None, renewed_at=old.renewed_at
                )
        elif old.lease is None:
            self.timing = LeaseTiming(
                lease=lease, first_seen=now, changed_at=None, renewed_at=old.renewed_at
            )
        elif lease.record != old.lease.record:
            renewed = now if lease.held else old.renewed_at
            self.timing = LeaseTiming(
                lease=lease, first_seen=old.first_seen, changed_at=now, renewed_at=renewed
            )
        else:
            self.timing = replace(old, lease=lease)
        previous = old.lease.holder if old is not None and old.lease is not None else None
        holder = lease.holder if lease is not None else None
        if old is not None and holder != previous:
            if holder:
                self.metrics.transitions.inc()
            self.baseline = None
            matches = holder_pods(holder, list(self.pods.values())) if holder else ()
            if holder and len(matches) == 1 and matches[0].container is not None:
                cv = matches[0].container
                self.baseline = Baseline(
                    holder=holder, container_id=cv.container_id, restarts=cv.restarts
                )

    # -- one round ----------------------------------------------------------------------
    def step(self) -> Decision:
        snap = self.observe()
        now = self.clock()
        decision = decide(snap, self.history, now=now, policy=self.config.policy)
        self._account(snap, now)
        if decision.kind is not Kind.WAIT:
            self.act(decision, now)
        elif self.last_decision is None or gist(self.last_decision.reason) != gist(decision.reason):
            self.log({"event": "decision", "action": "Wait", "reason": decision.reason,
                      **self._tags()})  # fmt: skip
        self.last_decision = decision
        return decision

    def _account(self, snap: Snapshot, now: float) -> None:
        m = self.metrics
        m.leader.set(1 if self.guard_renewed_at is not None else 0)
        m.since_renewal.set(max(0.0, now - snap.timing.renewed_at))
        m.fallback_active.set(
            1 if snap.manifest is Manifest.IN_PLACE and snap.fallback_marker else 0
        )
        last = self.last_step_at
        self.last_step_at = now
        if not snap.api_reachable or last is None:
            return
        validity = snap.timing.validity(
            now=now, default_duration_s=self.config.policy.default_lease_duration_s
        )
        if validity in (Validity.FREE, Validity.EXPIRED):
            m.outage.inc(max(0.0, now - last))

    def act(self, decision: Decision, now: float) -> None:
        c = self.config
        name = c.manifest_name
        record: dict[str, Any] = {
            "event": "action",
            "action": decision.kind.value,
            "reason": decision.reason,
            **self._tags(),
        }
        try:
            if decision.kind is Kind.FALLBACK:
                marker = marker_path(self.files, name)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(
                    json.dumps({"node": c.node, "by": self.identity, "at": self.wall().isoformat()})
                )
                result = self.files.unpark(c.node, name)
                record["result"] = result.state
                if result.cleared:
                    record["cleared"] = result.cleared  # the kubelet's memory of the pod
                self.metrics.fallbacks.inc()
                if decision.holder:
                    record["released"] = self._release(decision.holder)
            elif decision.kind is Kind.HAND_BACK:
                result = self.files.park(c.node, name)
                marker_path(self.files, name).unlink(missing_ok=True)
                record["result"] = result.state
                self.metrics.handbacks.inc()
            elif decision.kind is Kind.REAP:
                record["holder"] = decision.holder
                record["evidence"] = decision.evidence
                released = self._release(decision.holder)
                record["result"] = "released" if released else "the Lease changed meanwhile"
                if released:
                    self.metrics.reaps.inc()
        except (KubehoistError, OSError) as exc:
            record["error"] = str(exc)
            self.log(record)
            self.history.append(Done(kind=decision.kind, at=now, holder=decision.holder))
            return
        self.history.append(Done(kind=decision.kind, at=now, holder=decision.holder))
        self.log(record)
        self.emit_event(decision, str(record.get("result", "")))

    def _release(self, holder: str) -> bool:
        """Release the component's Lease if `holder` still holds it (resourceVersion-checked)."""
        c = self.config
        call = Call(
            verb="update",
            resource="leases",
            namespace=c.component.lease_namespace,
            name=c.component.lease_name,
        )
        with api_errors(call, server=self._server()):
            return leases.release(
                self.client,
                namespace=c.component.lease_namespace,
                name=c.component.lease_name,
                holder=holder,
            )

    def emit_event(self, decision: Decision, result: str) -> None:
        """A Kubernetes Event on the Deployment; a failure to write one is only logged."""
        c = self.config
        stamp = self.wall()
        message = decision.reason + (f" ({decision.evidence})" if decision.evidence else "")
        message = f"{message}; {result}" if result else message
        try:
            dep = get_or_none(self.client, Deployment, c.deployment_name, namespace=c.namespace)
            uid = dep.metadata.uid if dep is not None and dep.metadata else None
            event = Event(
                metadata=ObjectMeta(
                    name=f"{c.deployment_name}.guard.{secrets.token_hex(6)}",
                    namespace=c.namespace,
                    labels=object_labels(c.component.name),
                ),
                involvedObject=ObjectReference(
                    apiVersion="apps/v1",
                    kind="Deployment",
                    name=c.deployment_name,
                    namespace=c.namespace,
                    uid=uid,
                ),
                reason=f"Guard{decision.kind.value}",
                message=message[:1000],
                type="Normal" if decision.kind is Kind.HAND_BACK else "Warning",
                source=EventSource(component="kubehoist-guard", host=c.node),
                firstTimestamp=stamp,
                lastTimestamp=stamp,
                count=1,
            )
            call = Call(verb="create", resource="events", namespace=c.namespace)
            with api_errors(call, server=self._server()):
                self.client.create(event)
        except (KubehoistError, ApiError) as exc:
            self.log({"event": "event-error", "error": str(exc), **self._tags()})

    def _error(self, event: str, message: str) -> None:
        """Log an error once, not every round while it lasts."""
        if self.last_error.get(event) != message:
            self.last_error[event] = message
            self.log({"event": event, "error": message, **self._tags()})

    def resign(self) -> None:
        """Release the guards' Lease if this guard holds it (on shutdown), so another
        guard takes over at its next try instead of after the lease duration."""
        try:
            self.guard_lease.resign()
        except KubehoistError as exc:
            self.log({"event": "resign-error", "error": exc.message, **self._tags()})

    def _tags(self) -> dict[str, Any]:
        return {
            "ts": self.wall().isoformat(),
            "component": self.config.component.name,
            "node": self.config.node,
            "guard": self.identity,
        }

    def run(self, stop: threading.Event | None = None, wake: threading.Event | None = None) -> None:
        """Step every `interval` until `stop` is set; `wake` (set by guard.nudge's
        watches, and with `stop`) starts the next round sooner, at most every
        nudge.MIN_GAP_S."""
        stop = stop or threading.Event()
        self.log({"event": "start", **self._tags()})
        try:
            while not stop.is_set():
                started = self.clock()
                self.step()
                took = self.clock() - started
                self.metrics.round_seconds.observe(took)
                left = self.config.interval_s - took
                if wake is None:
                    stop.wait(max(0.0, left))
                    continue
                stop.wait(MIN_GAP_S)
                wake.wait(max(0.0, left - MIN_GAP_S))
                wake.clear()
        finally:
            self.resign()
            self.log({"event": "stop", **self._tags()})
