"""PURE: Lease semantics as a standby sees them, and who is who in an election.

Owns four things, none of which does I/O:

* the holder identity: client-go's leader election in kube-controller-manager and
  kube-scheduler builds it as `os.Hostname() + "_" + uuid.NewUUID()`, so the *last*
  `_` separates the hostname (which may itself contain `_`) from a 36-character UUID
  that is new on every process start;
* identity -> candidate: a hostNetwork pod (kubeadm's static pods) has the node's
  hostname, any other pod its own name (or `spec.hostname`), truncated to 63
  characters like the kubelet does;
* validity as a standby sees it: client-go never compares `renewTime` with its own
  clock. It notes, with its own monotonic clock, when it last saw the record
  *change*, and treats the lease as held until `leaseDurationSeconds` after that.
  An observer that has not yet seen a change cannot know more than "unknown yet",
  and can call the lease expired only once it has watched it unchanged for a full
  lease duration;
* the verdict on one component (see `Verdict`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
HOSTNAME_MAX: Final = 63
"""The kubelet truncates a pod's hostname to this length."""


# --- the Lease ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """The fields of a coordination.k8s.io/v1 Lease that leader election uses."""

    namespace: str
    name: str
    holder: str | None
    duration_s: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int | None
    resource_version: str = ""
    strategy: str | None = None
    preferred_holder: str | None = None

    @property
    def record(self) -> tuple[object, ...]:
        """What client-go compares to decide that the record changed (not resourceVersion:
        a label edit changes that without the leader doing anything)."""
        return (
            self.holder or "",
            self.duration_s,
            self.acquire_time,
            self.renew_time,
            self.transitions,
        )

    @property
    def held(self) -> bool:
        return bool(self.holder)


@dataclass(frozen=True, kw_only=True)
class Identity:
    """A parsed holder identity."""

    raw: str
    hostname: str
    uuid: str | None
    """None when the identity is not `<hostname>_<uuid>`."""

    @property
    def well_formed(self) -> bool:
        return self.uuid is not None


def parse_identity(raw: str) -> Identity:
    """Split `<hostname>_<uuid>` at the last `_`; anything else keeps `uuid=None`."""
    hostname, sep, tail = raw.rpartition("_")
    if sep and hostname and UUID_RE.fullmatch(tail):
        return Identity(raw=raw, hostname=hostname, uuid=tail.lower())
    return Identity(raw=raw, hostname=raw, uuid=None)


# --- validity ----------------------------------------------------------------------


class Validity(enum.Enum):
    VALID = "valid"
    """The record changed within the last lease duration, by our clock."""
    EXPIRED = "expired"
    """Unchanged for at least a lease duration, by our clock."""
    FREE = "free"
    """No holder: the last holder released it (or nobody ever took it)."""
    UNKNOWN = "unknown"
    """Not observed long enough to know."""


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What one observer knows of a Lease, timed by its own monotonic clock."""

    lease: LeaseRecord
    first_seen: float
    """When this observer first saw the Lease (monotonic seconds)."""
    changed_at: float | None
    """When it last saw the record change; None until it has seen one."""

    def observe(self, lease: LeaseRecord, *, now: float) -> Observation:
        """The observation after seeing `lease` at `now`."""
        if lease.record == self.lease.record:
            return Observation(lease=lease, first_seen=self.first_seen, changed_at=self.changed_at)
        return Observation(lease=lease, first_seen=self.first_seen, changed_at=now)

    @property
    def reference(self) -> float:
        """The instant from which the lease duration runs (last change, else first sight)."""
        return self.changed_at if self.changed_at is not None else self.first_seen

    def duration(self, default_s: float) -> float:
        return float(self.lease.duration_s) if self.lease.duration_s else default_s

    def validity(self, *, now: float, default_duration_s: float = 15.0) -> Validity:
        if not self.lease.held:
            return Validity.FREE
        expires = self.reference + self.duration(default_duration_s)
        if now >= expires:
            return Validity.EXPIRED
        if self.changed_at is None:
            return Validity.UNKNOWN
        return Validity.VALID

    def valid_until(self, *, default_duration_s: float = 15.0) -> float:
        """Monotonic time at which a standby would consider the lease expired."""
        return self.reference + self.duration(default_duration_s)

    def since_change(self, *, now: float) -> float | None:
        """Seconds since the record was last seen to change, if it has been."""
        return None if self.changed_at is None else now - self.changed_at


def first_observation(lease: LeaseRecord, *, now: float) -> Observation:
    return Observation(lease=lease, first_seen=now, changed_at=None)


# --- candidates --------------------------------------------------------------------


class CandidateKind(enum.Enum):
    STATIC = "static"
    """A mirror pod of a static pod (annotation kubernetes.io/config.mirror)."""
    DEPLOYMENT = "deployment"
    """Owned by a ReplicaSet."""
    POD = "pod"
    """Anything else that carries the component's labels."""


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A pod that runs (or could run) the component and takes part in its election."""

    component: str
    name: str
    namespace: str
    uid: str
    kind: CandidateKind
    node: str | None
    host_network: bool
    spec_hostname: str | None = None
    ready: bool
    ready_since: datetime | None = None
    restarts: int = 0
    created: datetime | None = None
    terminating: bool = False
    phase: str = ""
    pod_ip: str | None = None
    resource_version: str = ""

    @property
    def hostname(self) -> str | None:
        """The hostname its process sees, hence the first part of its identity."""
        if self.host_network:
            return self.node
        name = self.spec_hostname or self.name
        if len(name) > HOSTNAME_MAX:
            name = name[:HOSTNAME_MAX].rstrip("-.")
        return name


def host_is_node(hostname: str, node: str) -> bool:
    """Whether a hostNetwork process whose OS hostname is `hostname` may run on `node`.

    A hostNetwork pod's identity carries the machine's OS hostname, which the kubelet
    does not report when it runs with `--hostname-override` (kubeadm's
    `nodeRegistration.name`): the Node is `cp-2`, the machine says
    `cp-2.example.internal` — or the other way round. Case-blind; equal, or one is the
    other's first DNS label."""
    a, b = hostname.lower().rstrip("."), node.lower().rstrip(".")
    return a == b or a.split(".", 1)[0] == b or b.split(".", 1)[0] == a


def node_of_host(hostname: str, nodes: Iterable[str]) -> str | None:
    """The one node of `nodes` that `hostname` names (exactly, else by `host_is_node`)."""
    names = list(dict.fromkeys(nodes))
    exact = [n for n in names if n.lower() == hostname.lower()]
    if exact:
        return exact[0] if len(exact) == 1 else None
    loose = [n for n in names if host_is_node(hostname, n)]
    return loose[0] if len(loose) == 1 else None


def match_holder(identity: Identity, candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """The candidates whose hostname is the identity's (hostnames compare case-blind; a
    hostNetwork pod's is its node's, which an FQDN hostname also names)."""
    if not identity.well_formed:
        return ()
    host = identity.hostname.lower()
    exact = tuple(c for c in candidates if c.hostname is not None and c.hostname.lower() == host)
    if exact:
        return exact
    return tuple(c for c in candidates if c.host_network and c.node and host_is_node(host, c.node))


# --- the verdict -------------------------------------------------------------------


class Role(enum.Enum):
    LEADER = "leader"
    STANDBY = "standby"
    NOT_READY = "not ready"
    TERMINATING = "terminating"
    AMBIGUOUS = "leader?"
    """Shares the holder's hostname with another candidate (hostNetwork on one node)."""


class Verdict(enum.Enum):
    """One word per component; only HEALTHY is healthy. Checked in this order."""

    NO_CANDIDATES = "NoCandidates"
    """No pod of the component exists (static or Deployment)."""
    NO_LEASE = "NoLease"
    """No Lease: leader election is off, or the component never ran elected."""
    EXPIRED = "Expired"
    """No valid holder: released, or unchanged for a lease duration by our clock."""
    HOLDER_UNKNOWN = "HolderUnknown"
    """The holder matches no candidate (or its identity is not <hostname>_<uuid>)."""
    HOLDER_AMBIGUOUS = "HolderAmbiguous"
    """Several candidates share the holder's hostname; which one leads is unknowable."""
    LEADER_NOT_READY = "LeaderNotReady"
    """The holder's pod is not Ready or is terminating."""
    NO_STANDBY = "NoStandby"
    """A leader, but no Ready candidate to fail over to."""
    HEALTHY = "Healthy"
    """A Ready leader and at least one Ready standby."""


@dataclass(frozen=True, kw_only=True)
class Assessment:
    component: str
    verdict: Verdict
    reason: str
    validity: Validity | None
    identity: Identity | None
    leader: Candidate | None
    roles: tuple[tuple[str, Role], ...]
    """(pod name, role) in the order of the candidates given."""
    standbys: int

    def role(self, pod: str) -> Role | None:
        return dict(self.roles).get(pod)


def role_of(candidate: Candidate, *, leaders: Sequence[Candidate]) -> Role:
    if candidate in leaders:
        return Role.LEADER if len(leaders) == 1 else Role.AMBIGUOUS
    if candidate.terminating:
        return Role.TERMINATING
    return Role.STANDBY if candidate.ready else Role.NOT_READY


def assess(
    *,
    component: str,
    observation: Observation | None,
    candidates: Sequence[Candidate],
    now: float,
) -> Assessment:
    """The verdict on one component from its Lease (as observed) and its candidates."""
    validity = None if observation is None else observation.validity(now=now)
    identity = (
        parse_identity(observation.lease.holder)
        if observation is not None and observation.lease.holder
        else None
    )
    holders = match_holder(identity, candidates) if identity is not None else ()
    if validity in (Validity.FREE, Validity.EXPIRED):
        holders = ()
    roles = tuple((c.name, role_of(c, leaders=holders)) for c in candidates)
    leader = holders[0] if len(holders) == 1 else None
    standbys = sum(1 for c in candidates if c not in holders and c.ready and not c.terminating)

    def verdict(v: Verdict, reason: str) -> Assessment:
        return Assessment(
            component=component,
            verdict=v,
            reason=reason,
            validity=validity,
            identity=identity,
            leader=leader,
            roles=roles,
            standbys=standbys,
        )

    if not candidates:
        return verdict(Verdict.NO_CANDIDATES, "no static or Deployment pod of the component")
    if observation is None:
        return verdict(
            Verdict.NO_LEASE, "no Lease: leader election is off or the component never ran elected"
        )
    if validity is Validity.FREE:
        return verdict(Verdict.EXPIRED, "the Lease has no holder (released)")
    if validity is Validity.EXPIRED:
        return verdict(
            Verdict.EXPIRED, "the Lease has not changed for a lease duration (by kubehoist's clock)"
        )
    assert identity is not None
    if not identity.well_formed:
        return verdict(
            Verdict.HOLDER_UNKNOWN,
            f"holder identity {identity.raw!r} is not in the <hostname>_<uuid> format",
        )
    if not holders:
        return verdict(
            Verdict.HOLDER_UNKNOWN,
            f"holder hostname {identity.hostname!r} matches no static or Deployment pod",
        )
    if leader is None:
        names = ", ".join(c.name for c in holders)
        return verdict(
            Verdict.HOLDER_AMBIGUOUS, f"hostname {identity.hostname!r} is shared by {names}"
        )
    if leader.terminating or not leader.ready:
        state = "terminating" if leader.terminating else "not Ready"
        return verdict(Verdict.LEADER_NOT_READY, f"the leader's pod {leader.name} is {state}")
    if standbys == 0:
        return verdict(Verdict.NO_STANDBY, "a leader but no Ready standby to fail over to")
    plural = "s" if standbys != 1 else ""
    return verdict(Verdict.HEALTHY, f"a Ready leader and {standbys} Ready standby{plural}")
