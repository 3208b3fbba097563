"""PURE: the guard's decision engine. One snapshot of what the guard knows in, one
action (or `Wait`) out, with a reason a human can read.

Actions:

* `Fallback` — put this node's parked static pod manifest back: the component has had
  no valid leader for `grace` by the guard's own clock, its Deployment has no Ready
  replica, this guard holds the guards' own Lease, and the API server answered.
* `HandBack` — park our fallback again: it is ours (the node's fallback marker is
  there), Deployment replicas have been Ready for `settle` (doubled after each
  hand-back that was followed by a fallback), so one of them can take over.
* `Reap` — release the component's Lease: its holder is certainly dead (see
  `death_evidence`). Also how a hand-back ends fast: once this node's static fallback
  is certainly dead its Lease is released.
* `Wait` — anything else, always with the reason.

Safety (never two leaders; tested, also with hypothesis):

* never act when the API server did not answer or the snapshot is older than
  `max_age` — stale knowledge is no knowledge;
* never `Fallback` while the Lease is valid by our clock (held and seen to change
  within its duration, or not yet watched for a full duration);
* never `Reap` a holder that is not certainly dead. "Certainly dead" is proved from
  the kubelet's container timestamps against the Lease's `acquireTime`, both written
  with the clock of the node the holder runs on (the holder process and its kubelet
  share a machine): a container instance of the holder's pod that finished after
  the holder acquired, or that started after it acquired, means the instance that
  held the Lease has ended (a kubelet runs one instance of a container at a time).
  Timestamps are compared at whole seconds, strictly, so truncation can only make
  the guard slower, never wrong. A node that stops reporting, a pod deleted by force
  while its last state said running, an ambiguous hostname: not certain — the Lease
  is left to expire.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubehoist.election import (
    LeaseRecord,
    Observation,
    Validity,
    host_is_node,
    parse_identity,
)

# --- what the guard observes -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContainerView:
    """The component's container in a pod, as its kubelet last reported it."""

    container_id: str = ""
    restarts: int = 0
    state: str = ""
    """"running", "waiting", "terminated" or "" when not reported."""
    started_at: datetime | None = None
    """Start of the current instance (state.running or state.terminated)."""
    finished_at: datetime | None = None
    """End of the current instance, when state.terminated."""
    last_finished_at: datetime | None = None
    """End of the previous instance (lastState.terminated)."""


@dataclass(frozen=True, kw_only=True)
class PodView:
    """A pod that runs (or ran) the component: a static pod's mirror or a Deployment pod."""

    name: str
    uid: str = ""
    node: str | None = None
    static: bool = False
    deployment: bool = False
    host_network: bool = False
    spec_hostname: str | None = None
    ready: bool = False
    phase: str = ""
    deleting: bool = False
    """deletionTimestamp set."""
    gone: bool = False
    """No longer in the API: this is the last state the guard saw."""
    container: ContainerView | None = None

    @property
    def hostname(self) -> str | None:
        """The hostname the pod's processes see: the first part of their identity."""
        if self.host_network:
            return self.node
        name = self.spec_hostname or self.name
        return name[:63].rstrip("-.") if len(name) > 63 else name

    @property
    def can_take_over(self) -> bool:
        """A Deployment replica that is Ready and not going away."""
        return self.deployment and self.ready and not self.deleting and not self.gone


class Manifest(enum.Enum):
    """This node's static pod manifest of the component."""

    IN_PLACE = "in-place"
    PARKED = "parked"
    ABSENT = "absent"
    """Neither in place nor parked: nothing the guard can do on this node."""


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """The holder's container when the guard first saw that holder on the Lease."""

    holder: str
    container_id: str
    restarts: int


@dataclass(frozen=True, kw_only=True)
class LeaseTiming:
    """The component's Lease as timed by the guard's monotonic clock."""

    lease: LeaseRecord | None
    """None when the Lease does not exist."""
    first_seen: float
    """When the guard first saw the Lease in its current existence (or its absence)."""
    changed_at: float | None
    """When it last saw the record change; None until it has seen one."""
    renewed_at: float
    """When it last saw a held record change (an acquisition or renewal); `first_seen`
    when it never has. A release is a change but not a renewal."""

    def observation(self) -> Observation | None:
        if self.lease is None:
            return None
        return Observation(lease=self.lease, first_seen=self.first_seen, changed_at=self.changed_at)

    def validity(self, *, now: float, default_duration_s: float) -> Validity:
        obs = self.observation()
        if obs is None:
            return Validity.FREE
        return obs.validity(now=now, default_duration_s=default_duration_s)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the guard knows at `taken_at` (monotonic seconds)."""

    taken_at: float
    api_reachable: bool
    """False when any read of this round failed: the rest is then stale."""
    node: str
    """The node this guard runs on."""
    timing: LeaseTiming
    pods: tuple[PodView, ...] = ()
    manifest: Manifest = Manifest.PARKED
    fallback_marker: bool = False
    """This node's fallback marker: the manifest in place was put there by a guard."""
    guard_renewed_at: float | None = None
    """When this guard last acquired or renewed the guards' Lease; None: not holding."""
    ready_since: float | None = None
    """Since when (our clock) the Deployment has had at least one replica that could
    take over, without interruption; None when it has none now."""
    baseline: Baseline | None = None


# --- what the guard did ----------------------------------------------------------------


class Kind(enum.Enum):
    FALLBACK = "Fallback"
    HAND_BACK = "HandBack"
    REAP = "Reap"
    WAIT = "Wait"


@dataclass(frozen=True, kw_only=True)
class Done:
    """One action the guard performed, at `at` on its monotonic clock."""

    kind: Kind
    at: float
    holder: str = ""


@dataclass(frozen=True, kw_only=True)
class Policy:
    grace_s: float = 20.0
    """No valid leader for this long (since the last observed renewal) before a fallback.
    At least one lease duration."""
    settle_s: float = 30.0
    """Deployment replicas Ready for this long before a hand-back."""
    max_age_s: float = 3.0
    """A snapshot older than this is stale: act on nothing."""
    min_interval_s: float = 10.0
    """Between two node actions (fallback, hand-back)."""
    flap_window_s: float = 300.0
    """A fallback within this long after a hand-back counts as a flap."""
    max_backoff_doublings: int = 5
    default_lease_duration_s: float = 15.0
    guard_renew_deadline_s: float = 10.0
    """The guards' Lease counts as ours for this long after our last renewal."""
    reaper: bool = True
    """Release the Lease of a holder that is certainly dead (fast unplanned failover).
    Off, an unplanned failover waits out the lease duration; the tail of this guard's
    own hand-back (its parked static pod) is released either way."""

    def __post_init__(self) -> None:
        if self.grace_s < self.default_lease_duration_s:
            raise ValueError(
                f"grace {self.grace_s}s is shorter than the lease duration "
                f"{self.default_lease_duration_s}s"
            )
        if self.settle_s < 0 or self.max_age_s <= 0 or self.min_interval_s < 0:
            raise ValueError("settle, max age and min interval must be positive")


@dataclass(frozen=True, kw_only=True)
class Decision:
    kind: Kind
    reason: str
    holder: str = ""
    """For Reap, and Fallback over an expired holder: the identity to release (released
    only if it still holds)."""
    evidence: str = ""
    """For Reap: why the holder is certainly dead."""
    details: dict[str, str] = field(default_factory=dict)


def wait(reason: str) -> Decision:
    return Decision(kind=Kind.WAIT, reason=reason)


# --- certainly dead ---------------------------------------------------------------------


def _whole_seconds(t: datetime) -> int:
    return math.floor(t.timestamp())


def holder_pods(holder: str, pods: Sequence[PodView]) -> tuple[PodView, ...]:
    """The pods whose hostname is the holder identity's (case-blind)."""
    identity = parse_identity(holder)
    if not identity.well_formed:
        return ()
    host = identity.hostname.lower()
    exact = tuple(p for p in pods if p.hostname is not None and p.hostname.lower() == host)
    if exact:
        return exact
    return tuple(p for p in pods if p.host_network and p.node and host_is_node(host, p.node))


def death_evidence(
    lease: LeaseRecord, pods: Sequence[PodView], *, baseline: Baseline | None = None
) -> str | None:
    """Why the Lease's holder is certainly dead, or None when that is not certain."""
    if not lease.holder or lease.acquire_time is None:
        return None
    matches = holder_pods(lease.holder, pods)
    if len(matches) != 1:
        return None  # unknown holder, or a hostname shared by several pods
    pod = matches[0]
    c = pod.container
    if c is None:
        return None
    if baseline is not None and baseline.holder == lease.holder and c.restarts < baseline.restarts:
        return None  # counters went back: not the pod we think it is
    acquired = _whole_seconds(lease.acquire_time)
    where = f"pod {pod.name}" + (f" on {pod.node}" if pod.node else "")
    since = lease.acquire_time.isoformat()
    if c.state == "terminated" and c.finished_at and _whole_seconds(c.finished_at) > acquired:
        gone = " and deleted" if pod.gone or pod.deleting else ""
        ended = c.finished_at.isoformat()
        return (
            f"{where}: its container terminated{gone} at {ended}, "
            f"after the holder acquired at {since}"
        )
    if c.last_finished_at and _whole_seconds(c.last_finished_at) > acquired:
        ended = c.last_finished_at.isoformat()
        return (
            f"{where}: its container was replaced (previous instance ended at {ended}, "
            f"after the holder acquired at {since})"
        )
    if c.started_at and _whole_seconds(c.started_at) > acquired:
        if (
            baseline is not None
            and baseline.holder == lease.holder
            and (c.container_id == baseline.container_id or c.restarts <= baseline.restarts)
        ):
            return None  # the timestamps say replaced, the counters do not: not certain
        started = c.started_at.isoformat()
        return (
            f"{where}: a new container instance ({c.container_id or 'unknown id'}, "
            f"restarts {c.restarts}) started at {started}, after the holder acquired at {since}"
        )
    return None


def parked_static_evidence(lease: LeaseRecord, pods: Sequence[PodView], *, node: str) -> str | None:
    """The holder is this node's static pod, whose manifest this node has parked, and
    its mirror pod is gone: the kubelet deletes a mirror pod only once the static pod
    has fully terminated (the rule pivot's hand-over uses). Only for this node's own
    static pod, whose manifest the caller knows to be parked."""
    if not lease.holder:
        return None
    matches = holder_pods(lease.holder, pods)
    if len(matches) != 1:
        return None
    pod = matches[0]
    if not (pod.static and pod.gone and pod.node == node):
        return None
    return (
        f"mirror pod {pod.name} on {node} was deleted after its manifest was parked: "
        "the static pod has terminated"
    )


# --- the decision -----------------------------------------------------------------------


def flaps(history: Sequence[Done], *, window_s: float) -> int:
    """Consecutive hand-backs (from the latest back) each followed by a fallback within
    `window_s`: how many times the Deployment failed right after taking over."""
    node_actions = [d for d in history if d.kind in (Kind.FALLBACK, Kind.HAND_BACK)]
    count = 0
    i = len(node_actions) - 1
    while i >= 1:
        later, earlier = node_actions[i], node_actions[i - 1]
        if (
            later.kind is Kind.FALLBACK
            and earlier.kind is Kind.HAND_BACK
            and later.at - earlier.at <= window_s
        ):
            count += 1
            i -= 2
            continue
        break
    return count


def settle_needed(history: Sequence[Done], policy: Policy) -> float:
    """`settle`, doubled for every recent flap (capped)."""
    doublings = min(flaps(history, window_s=policy.flap_window_s), policy.max_backoff_doublings)
    return policy.settle_s * float(2**doublings)


def _last_node_action(history: Sequence[Done]) -> Done | None:
    for done in reversed(history):
        if done.kind in (Kind.FALLBACK, Kind.HAND_BACK):
            return done
    return None


def holds_guard_lease(snap: Snapshot, *, now: float, policy: Policy) -> bool:
    at = snap.guard_renewed_at
    return at is not None and at <= now and now - at < policy.guard_renew_deadline_s


def decide(snap: Snapshot, history: Sequence[Done], *, now: float, policy: Policy) -> Decision:
    """The one thing to do now, or `Wait`, with the reason."""
    if not snap.api_reachable:
        return wait("the last reads failed: acting on nothing until they succeed")
    age = now - snap.taken_at
    if age < 0 or age > policy.max_age_s:
        return wait(f"the snapshot is {age:.1f}s old (max {policy.max_age_s:.0f}s): stale")

    timing = snap.timing
    validity = timing.validity(now=now, default_duration_s=policy.default_lease_duration_s)
    lease = timing.lease
    takers = [p for p in snap.pods if p.can_take_over]
    leader_guard = holds_guard_lease(snap, now=now, policy=policy)
    last = _last_node_action(history)
    since_last = None if last is None else now - last.at

    # 1. Reap: a holder that is certainly dead, while its Lease still looks valid.
    if lease is not None and lease.holder and validity in (Validity.VALID, Validity.UNKNOWN):
        evidence = death_evidence(lease, snap.pods, baseline=snap.baseline)
        already = any(d.kind is Kind.REAP and d.holder == lease.holder for d in history)
        own_static = parse_identity(lease.holder).hostname.lower() == snap.node.lower() and any(
            p.static and p.node == snap.node for p in holder_pods(lease.holder, snap.pods)
        )
        own_parked = own_static and snap.manifest is Manifest.PARKED
        if evidence is None and own_parked:
            evidence = parked_static_evidence(lease, snap.pods, node=snap.node)
        may_act = (leader_guard and policy.reaper) or own_parked
        if evidence is not None and not already and may_act:
            return Decision(
                kind=Kind.REAP,
                reason=f"the holder {lease.holder} is certainly dead: release its Lease",
                holder=lease.holder,
                evidence=evidence,
            )

    # 2. HandBack: our fallback is in place and the Deployment can take over again.
    if snap.manifest is Manifest.IN_PLACE and snap.fallback_marker:
        need = settle_needed(history, policy)
        if snap.ready_since is None or not takers:
            return wait("the fallback runs; no Deployment replica could take over yet")
        ready_for = now - snap.ready_since
        if ready_for < need:
            return wait(
                f"the fallback runs; Deployment replicas Ready for {ready_for:.0f}s "
                f"of the {need:.0f}s needed before handing back"
            )
        if since_last is not None and since_last < policy.min_interval_s:
            return wait(f"the last node action was {since_last:.0f}s ago: too soon")
        return Decision(
            kind=Kind.HAND_BACK,
            reason=(
                f"{len(takers)} Deployment replica(s) Ready for {ready_for:.0f}s "
                f"(settle {need:.0f}s): park the fallback again"
            ),
        )

    # 3. Fallback: nobody leads, nobody can, and this guard is the one to act.
    if validity in (Validity.VALID, Validity.UNKNOWN):
        holder = lease.holder if lease is not None else None
        return wait(f"the Lease is {validity.value} by our clock (holder {holder})")
    silent = now - timing.renewed_at
    if silent < policy.grace_s:
        return wait(
            f"no valid leader; {silent:.0f}s since the last renewal seen "
            f"(grace {policy.grace_s:.0f}s)"
        )
    if takers:
        return wait(
            f"no valid leader for {silent:.0f}s, but {len(takers)} Deployment replica(s) "
            "are Ready and may take the Lease"
        )
    if snap.manifest is not Manifest.PARKED:
        return wait(f"no valid leader, but this node's manifest is {snap.manifest.value}")
    if not leader_guard:
        return wait("no valid leader, but another guard holds the guards' Lease")
    if since_last is not None and since_last < policy.min_interval_s:
        return wait(f"the last node action was {since_last:.0f}s ago: too soon")
    return Decision(
        kind=Kind.FALLBACK,
        reason=(
            f"no valid leader for {silent:.0f}s (grace {policy.grace_s:.0f}s) and no Ready "
            "Deployment replica: put the parked static pod back on this node"
        ),
        # An expired holder is released too: a process that first sees a held Lease
        # waits a whole lease duration before taking it (client-go times a Lease from
        # its own first observation), so the fallback would idle for that long.
        holder=(lease.holder or "") if lease is not None else "",
    )
