"""The guards' own Lease: one guard of a component acts at a time.

Every guard tries the Lease `kube-system/kubehoist-guard-<component>` every `retry_s`
by client-go's rules, timed by its own monotonic clock (when it last saw the record
change, never `renewTime` arithmetic across clocks): it acquires a free or expired
Lease, renews its own, and leaves one held by another guard alone. A write carries the
Lease's resourceVersion, so two guards never both win. On shutdown the holder releases
it, so another guard takes over at its next try.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from kubehoist.election import Observation, Validity
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases
from kubehoist.kube.errors import Call, api_errors
from kubehoist.kube.objects import lease_record


class GuardLease:
    """This guard's view of, and hold on, the guards' Lease."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str,
        name: str,
        identity: str,
        labels: Mapping[str, str],
        duration_s: int,
        retry_s: float,
        renew_deadline_s: float,
        wall: Callable[[], dt.datetime],
        server: str,
    ) -> None:
        self.client = client
        self.namespace, self.name = namespace, name
        self.identity = identity
        self.labels = dict(labels)
        self.duration_s = duration_s
        self.retry_s = retry_s
        self.renew_deadline_s = renew_deadline_s
        self.wall = wall
        self.server = server
        self.renewed_at: float | None = None
        """When this guard last renewed the Lease (its clock); None: it does not hold it."""
        self.observed: Observation | None = None
        self.tried_at: float | None = None

    def coordinate(self, now: float) -> None:
        """Acquire or renew the Lease if `retry_s` passed since the last try. A failed
        call raises `KubehoistError`; this guard then still counts as holding the Lease
        until `renew_deadline_s` after its last renewal (as client-go's leader does)."""
        if self.tried_at is not None and now - self.tried_at < self.retry_s:
            return
        self.tried_at = now
        call = Call(verb="update", resource="leases", namespace=self.namespace, name=self.name)
        try:
            with api_errors(call, server=self.server):
                self._try(now)
        except KubehoistError:
            if self.renewed_at is not None and now - self.renewed_at >= self.renew_deadline_s:
                self.renewed_at = None
            raise

    def _try(self, now: float) -> None:
        stamp = self.wall()
        try:
            lease = self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            self.client.create(self._new(stamp))
            self.renewed_at = now
            self.observed = None
            return
        record = lease_record(lease.to_dict())
        self.observed = (
            Observation(lease=record, first_seen=now, changed_at=None)
            if self.observed is None
            else self.observed.observe(record, now=now)
        )
        validity = self.observed.validity(now=now, default_duration_s=self.duration_s)
        ours = record.holder == self.identity
        if not (ours or validity in (Validity.FREE, Validity.EXPIRED)):
            self.renewed_at = None
            return
        spec = lease.spec or LeaseSpec()
        if not ours:
            spec.acquireTime = stamp
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.duration_s
        spec.renewTime = stamp
        lease.spec = spec
        try:
            self.client.replace(lease)  # with its resourceVersion: fails if it moved
        except ApiError as exc:
            if exc.status.code == 409:
                self.renewed_at = None
                return
            raise
        self.renewed_at = now

    def _new(self, stamp: dt.datetime) -> Lease:
        return Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace, labels=self.labels),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self.duration_s,
                acquireTime=stamp,
                renewTime=stamp,
                leaseTransitions=0,
            ),
        )

    def resign(self) -> None:
        """Release the Lease if this guard holds it."""
        if self.renewed_at is None:
            return
        self.renewed_at = None
        call = Call(verb="update", resource="leases", namespace=self.namespace, name=self.name)
        with api_errors(call, server=self.server):
            leases.release(
                self.client, namespace=self.namespace, name=self.name, holder=self.identity
            )
