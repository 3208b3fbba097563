"""The guard's decision engine: the decision table case by case, the back-off, and the
never-two-leaders invariants under random observations (hypothesis)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace as dc_replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubehoist.election import LeaseRecord, Validity
from kubehoist.guard.decide import (
    Baseline,
    ContainerView,
    Done,
    Kind,
    LeaseTiming,
    Manifest,
    PodView,
    Policy,
    Snapshot,
    death_evidence,
    decide,
    flaps,
    settle_needed,
)

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
UUID2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = Policy()
NODE = "cp-1"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def lease(holder: str | None = f"kcm-abc_{UUID}", *, acquired: float = 100.0) -> LeaseRecord:
    return LeaseRecord(
        namespace="kube-system",
        name="kube-controller-manager",
        holder=holder,
        duration_s=15,
        acquire_time=at(acquired),
        renew_time=at(acquired),
        transitions=1,
        resource_version="7",
    )


def deployment_pod(
    name: str = "kcm-abc", *, ready: bool = True, container: ContainerView | None = None, **kw: bool
) -> PodView:
    return PodView(
        name=name,
        uid=f"uid-{name}",
        node="w-1",
        deployment=True,
        ready=ready,
        container=container
        or ContainerView(container_id="c1", restarts=0, state="running", started_at=at(90)),
        **kw,
    )


def static_pod(node: str = NODE, **kw: object) -> PodView:
    kw.setdefault("container", ContainerView(container_id="s1", state="running", started_at=at(10)))
    return PodView(
        name=f"kube-controller-manager-{node}",
        node=node,
        static=True,
        host_network=True,
        ready=True,
        **kw,  # type: ignore[arg-type]
    )


def snapshot(
    *,
    now: float = 1000.0,
    lease_: LeaseRecord | None = None,
    changed_ago: float | None = 1.0,
    renewed_ago: float | None = None,
    pods: tuple[PodView, ...] = (),
    manifest: Manifest = Manifest.PARKED,
    marker: bool = False,
    guard: bool = True,
    ready_for: float | None = None,
    reachable: bool = True,
    age: float = 0.0,
    baseline: Baseline | None = None,
) -> Snapshot:
    changed = None if changed_ago is None else now - changed_ago
    renewed = now - (renewed_ago if renewed_ago is not None else (changed_ago or 0.0))
    return Snapshot(
        taken_at=now - age,
        api_reachable=reachable,
        node=NODE,
        timing=LeaseTiming(
            lease=lease_, first_seen=now - 500, changed_at=changed, renewed_at=renewed
        ),
        pods=pods,
        manifest=manifest,
        fallback_marker=marker,
        guard_renewed_at=now - 1 if guard else None,
        ready_since=None if ready_for is None else now - ready_for,
        baseline=baseline,
    )


def run(snap: Snapshot, history: tuple[Done, ...] = (), now: float = 1000.0) -> Kind:
    return decide(snap, history, now=now, policy=POLICY).kind


# --- fallback ------------------------------------------------------------------------------

DEAD_LEASE = dict(lease_=lease(), changed_ago=30.0)


def test_fallback_when_every_condition_holds() -> None:
    d = decide(snapshot(**DEAD_LEASE), (), now=1000.0, policy=POLICY)  # type: ignore[arg-type]
    assert d.kind is Kind.FALLBACK
    assert "no valid leader for 30s" in d.reason


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (dict(changed_ago=5.0), "valid"),
        (dict(changed_ago=16.0), "grace"),
        (dict(reachable=False), "reads failed"),
        (dict(age=4.0), "stale"),
        (dict(guard=False), "another guard"),
        (dict(manifest=Manifest.IN_PLACE), "in-place"),
        (dict(manifest=Manifest.ABSENT), "absent"),
        (dict(pods=(deployment_pod(),), ready_for=1.0), "may take the Lease"),
    ],
)
def test_fallback_waits_when_one_condition_fails(change: dict[str, object], why: str) -> None:
    args: dict[str, object] = {**DEAD_LEASE, **change}
    d = decide(snapshot(**args), (), now=1000.0, policy=POLICY)  # type: ignore[arg-type]
    assert d.kind is Kind.WAIT
    assert why in d.reason


def test_fallback_on_a_free_or_missing_lease_after_grace() -> None:
    free = snapshot(lease_=lease(holder=None), changed_ago=2.0, renewed_ago=25.0)
    assert run(free) is Kind.FALLBACK
    assert run(snapshot(lease_=lease(holder=None), changed_ago=2.0, renewed_ago=5.0)) is Kind.WAIT
    assert run(snapshot(lease_=None, changed_ago=None, renewed_ago=25.0)) is Kind.FALLBACK


def test_unknown_validity_is_never_a_fallback() -> None:
    # First sight 10 s ago, no change seen yet: not a full lease duration watched.
    snap = snapshot(lease_=lease(), changed_ago=None, renewed_ago=30.0)
    snap = Snapshot(
        **{
            **snap.__dict__,
            "timing": LeaseTiming(
                lease=lease(), first_seen=990.0, changed_at=None, renewed_at=970.0
            ),
        }
    )
    assert snap.timing.validity(now=1000.0, default_duration_s=15) is Validity.UNKNOWN
    assert run(snap) is Kind.WAIT


def test_min_interval_between_node_actions() -> None:
    hist = (Done(kind=Kind.HAND_BACK, at=995.0),)
    assert run(snapshot(**DEAD_LEASE), hist) is Kind.WAIT  # type: ignore[arg-type]
    hist = (Done(kind=Kind.HAND_BACK, at=985.0),)
    assert run(snapshot(**DEAD_LEASE), hist) is Kind.FALLBACK  # type: ignore[arg-type]


def test_grace_must_cover_a_lease_duration() -> None:
    with pytest.raises(ValueError, match="shorter than the lease duration"):
        Policy(grace_s=5)


# --- hand-back -----------------------------------------------------------------------------

FALLBACK_RUNS = dict(
    lease_=lease(f"{NODE}_{UUID}"),
    manifest=Manifest.IN_PLACE,
    marker=True,
    pods=(static_pod(), deployment_pod()),
)


def test_hand_back_after_settle() -> None:
    assert run(snapshot(**FALLBACK_RUNS, ready_for=31.0)) is Kind.HAND_BACK  # type: ignore[arg-type]
    assert run(snapshot(**FALLBACK_RUNS, ready_for=29.0)) is Kind.WAIT  # type: ignore[arg-type]


def test_hand_back_needs_no_guard_lease_but_a_marker() -> None:
    assert run(snapshot(**FALLBACK_RUNS, ready_for=31.0, guard=False)) is Kind.HAND_BACK  # type: ignore[arg-type]
    args = {**FALLBACK_RUNS, "marker": False}
    # A manifest in place without our marker is not ours (a rollback put it back).
    assert run(snapshot(**args, ready_for=300.0)) is Kind.WAIT  # type: ignore[arg-type]


def test_hand_back_needs_a_replica_that_can_take_over() -> None:
    args = {**FALLBACK_RUNS, "pods": (static_pod(), deployment_pod(deleting=True))}
    assert run(snapshot(**args, ready_for=300.0)) is Kind.WAIT  # type: ignore[arg-type]


def test_flapping_doubles_settle() -> None:
    hist = (
        Done(kind=Kind.FALLBACK, at=100.0),
        Done(kind=Kind.HAND_BACK, at=200.0),
        Done(kind=Kind.FALLBACK, at=250.0),
        Done(kind=Kind.HAND_BACK, at=400.0),
        Done(kind=Kind.FALLBACK, at=420.0),
    )
    assert flaps(hist, window_s=300) == 2
    assert settle_needed(hist, POLICY) == 120.0
    assert run(snapshot(**FALLBACK_RUNS, ready_for=100.0), hist) is Kind.WAIT  # type: ignore[arg-type]
    assert run(snapshot(**FALLBACK_RUNS, ready_for=121.0), hist) is Kind.HAND_BACK  # type: ignore[arg-type]
    # A hand-back that held longer than the window resets the back-off.
    calm = (*hist, Done(kind=Kind.HAND_BACK, at=500.0), Done(kind=Kind.FALLBACK, at=900.0))
    assert flaps(calm, window_s=300) == 0
    long_history = tuple(
        Done(kind=k, at=float(i)) for i in range(40) for k in (Kind.HAND_BACK, Kind.FALLBACK)
    )
    assert settle_needed(long_history, POLICY) == 30.0 * 2**5


# --- reap ----------------------------------------------------------------------------------


def terminated(finished: float, started: float = 90.0) -> ContainerView:
    return ContainerView(
        container_id="c1", state="terminated", started_at=at(started), finished_at=at(finished)
    )


def test_reap_a_terminated_holder() -> None:
    snap = snapshot(lease_=lease(), pods=(deployment_pod(container=terminated(120)),))
    d = decide(snap, (), now=1000.0, policy=POLICY)
    assert d.kind is Kind.REAP and d.holder == f"kcm-abc_{UUID}"
    assert "terminated" in d.evidence


def test_reap_a_replaced_holder() -> None:
    replaced = ContainerView(container_id="c2", restarts=1, state="running", started_at=at(130))
    snap = snapshot(
        lease_=lease(),
        pods=(deployment_pod(container=replaced),),
        baseline=Baseline(holder=f"kcm-abc_{UUID}", container_id="c1", restarts=0),
    )
    assert run(snap) is Kind.REAP
    waiting = ContainerView(container_id="c1", state="waiting", last_finished_at=at(130))
    assert run(snapshot(lease_=lease(), pods=(deployment_pod(container=waiting),))) is Kind.REAP


@pytest.mark.parametrize(
    "container",
    [
        # finished in the same second it acquired: truncation could hide the order
        terminated(100.9),
        # finished before the holder acquired: a later instance holds the Lease
        terminated(99.0),
        # a new instance started before the acquisition: it may be the holder
        ContainerView(container_id="c2", restarts=1, state="running", started_at=at(99)),
        ContainerView(container_id="c1", state="running", started_at=at(90)),
        ContainerView(),
    ],
)
def test_no_reap_without_certainty(container: ContainerView) -> None:
    assert run(snapshot(lease_=lease(), pods=(deployment_pod(container=container),))) is Kind.WAIT


def test_no_reap_when_counters_contradict_the_timestamps() -> None:
    same = ContainerView(container_id="c1", restarts=0, state="running", started_at=at(130))
    base = Baseline(holder=f"kcm-abc_{UUID}", container_id="c1", restarts=0)
    assert run(snapshot(lease_=lease(), pods=(deployment_pod(container=same),), baseline=base)) is (
        Kind.WAIT
    )
    fewer = ContainerView(
        container_id="c9", restarts=0, state="terminated", started_at=at(90), finished_at=at(130)
    )
    base3 = Baseline(holder=f"kcm-abc_{UUID}", container_id="c1", restarts=3)
    assert run(
        snapshot(lease_=lease(), pods=(deployment_pod(container=fewer),), baseline=base3)
    ) is (Kind.WAIT)


def test_no_reap_of_a_pod_deleted_by_force_while_running() -> None:
    running = ContainerView(container_id="c1", state="running", started_at=at(90))
    pod = deployment_pod(container=running, gone=True)
    assert run(snapshot(lease_=lease(), pods=(pod,))) is Kind.WAIT
    dead = deployment_pod(container=terminated(130), gone=True)
    assert run(snapshot(lease_=lease(), pods=(dead,))) is Kind.REAP


def test_no_reap_of_an_ambiguous_or_unknown_holder() -> None:
    pods = (deployment_pod(container=terminated(130)), deployment_pod(container=terminated(130)))
    assert run(snapshot(lease_=lease(), pods=pods)) is Kind.WAIT
    assert run(snapshot(lease_=lease("someone-else"), pods=pods[:1])) is Kind.WAIT


def test_no_reap_when_unreachable_stale_expired_or_done_before() -> None:
    pods = (deployment_pod(container=terminated(130)),)
    assert run(snapshot(lease_=lease(), pods=pods, reachable=False)) is Kind.WAIT
    assert run(snapshot(lease_=lease(), pods=pods, age=10)) is Kind.WAIT
    assert run(snapshot(lease_=lease(), pods=pods, changed_ago=20)) is not Kind.REAP
    hist = (Done(kind=Kind.REAP, at=990.0, holder=f"kcm-abc_{UUID}"),)
    assert run(snapshot(lease_=lease(), pods=pods), hist) is Kind.WAIT


def test_reap_needs_the_guard_lease_except_for_our_own_parked_static_pod() -> None:
    pods = (deployment_pod(container=terminated(130)),)
    assert run(snapshot(lease_=lease(), pods=pods, guard=False)) is Kind.WAIT
    own = PodView(
        name=f"kube-controller-manager-{NODE}",
        node=NODE,
        static=True,
        host_network=True,
        container=terminated(130),
    )
    snap = snapshot(lease_=lease(f"{NODE}_{UUID}"), pods=(own,), guard=False)
    assert run(snap) is Kind.REAP
    in_place = snapshot(
        lease_=lease(f"{NODE}_{UUID}"), pods=(own,), guard=False, manifest=Manifest.IN_PLACE
    )
    assert run(in_place) is Kind.WAIT


def test_reaper_off_leaves_others_to_the_lease_but_finishes_our_own_hand_back() -> None:
    off = dc_replace(POLICY, reaper=False)
    pods = (deployment_pod(container=terminated(130)),)
    snap = snapshot(lease_=lease(), pods=pods)
    assert decide(snap, (), now=1000.0, policy=POLICY).kind is Kind.REAP
    assert decide(snap, (), now=1000.0, policy=off).kind is Kind.WAIT
    own = static_pod(container=terminated(130))
    own_snap = snapshot(lease_=lease(f"{NODE}_{UUID}"), pods=(own,), guard=False)
    assert decide(own_snap, (), now=1000.0, policy=off).kind is Kind.REAP


def test_our_parked_static_pod_whose_mirror_pod_is_gone_is_dead() -> None:
    running = ContainerView(container_id="s1", state="running", started_at=at(10))
    gone = static_pod(container=running, gone=True)
    holder = lease(f"{NODE}_{UUID}")
    assert run(snapshot(lease_=holder, pods=(gone,), guard=False)) is Kind.REAP
    # not while the manifest is in place (the kubelet may run it again) ...
    in_place = snapshot(lease_=holder, pods=(gone,), guard=False, manifest=Manifest.IN_PLACE)
    assert run(in_place) is Kind.WAIT
    # ... nor while its mirror pod is still there and reports it running,
    alive = static_pod(container=running)
    assert run(snapshot(lease_=holder, pods=(alive,), guard=False)) is Kind.WAIT
    # ... nor for another node's static pod, even with the guards' Lease.
    other = static_pod(node="cp-9", container=running, gone=True)
    assert run(snapshot(lease_=lease(f"cp-9_{UUID}"), pods=(other,))) is Kind.WAIT


# --- invariants under random observations --------------------------------------------------


def _floor(t: dt.datetime) -> dt.datetime:
    return at(math.floor((t - T0).total_seconds()))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Snapshot, bool, float]:
    """A true history of the holder's container instances, the Lease it acquired, and a
    (possibly stale, truncated) kubelet report of it; returns (snapshot, holder dead, now)."""
    n = draw(st.integers(1, 4))
    spans: list[tuple[float, float | None]] = []
    t = draw(st.floats(0, 50))
    for i in range(n):
        length = draw(st.floats(0.1, 30))
        last = i == n - 1
        end = None if last and draw(st.booleans()) else t + length
        spans.append((t, end))
        if end is not None:
            t = end + draw(st.floats(0.0, 5))
    true_now = max([s for s, _ in spans] + [e for _, e in spans if e is not None]) + draw(
        st.floats(0, 20)
    )
    j = draw(st.integers(0, n - 1))
    start, end = spans[j]
    acquired = draw(st.floats(start, end if end is not None else true_now))
    if end is not None and acquired >= end:
        acquired = start
    holder_dead = end is not None and end <= true_now
    # What the kubelet reported, as of `report` (stale at will), truncated to seconds.
    report = draw(st.floats(0, true_now))
    started = [(k, s, e) for k, (s, e) in enumerate(spans) if s <= report]
    container: ContainerView | None
    if not started:
        container = ContainerView(state="waiting")
    else:
        k, s, e = started[-1]
        prev_end = spans[k - 1][1] if k > 0 else None
        last_fin = at(prev_end) if prev_end is not None and prev_end <= report else None
        if e is not None and e <= report:
            container = ContainerView(
                container_id=f"c{k}",
                restarts=k,
                state="terminated",
                started_at=_floor(at(s)),
                finished_at=_floor(at(e)),
                last_finished_at=_floor(last_fin) if last_fin else None,
            )
        else:
            container = ContainerView(
                container_id=f"c{k}",
                restarts=k,
                state="running",
                started_at=_floor(at(s)),
                last_finished_at=_floor(last_fin) if last_fin else None,
            )
    acquire_time = at(acquired)
    if draw(st.booleans()):
        acquire_time = _floor(acquire_time)
    pod = deployment_pod(
        container=container,
        ready=draw(st.booleans()),
        gone=draw(st.booleans()),
        deleting=draw(st.booleans()),
    )
    others = tuple(deployment_pod(name=f"kcm-x{i}", ready=draw(st.booleans())) for i in range(2))
    record = LeaseRecord(
        namespace="kube-system",
        name="kube-controller-manager",
        holder=f"kcm-abc_{UUID}",
        duration_s=15,
        acquire_time=acquire_time,
        renew_time=acquire_time,
        transitions=1,
    )
    baseline = None
    if draw(st.booleans()) and container.container_id:
        baseline = Baseline(holder=record.holder or "", container_id=f"c{j}", restarts=j)
    now = 1000.0
    snap = Snapshot(
        taken_at=now - draw(st.floats(0, 5)),
        api_reachable=draw(st.booleans()) or draw(st.booleans()),
        node=NODE,
        timing=LeaseTiming(
            lease=record,
            first_seen=now - 100,
            changed_at=now - draw(st.floats(0, 40)),
            renewed_at=now - draw(st.floats(0, 40)),
        ),
        pods=(pod, *others),
        manifest=draw(st.sampled_from(list(Manifest))),
        fallback_marker=draw(st.booleans()),
        guard_renewed_at=draw(st.none() | st.floats(now - 20, now)),
        ready_since=draw(st.none() | st.floats(now - 100, now)),
        baseline=baseline,
    )
    return snap, holder_dead, now


@settings(max_examples=1500, deadline=None)
@given(worlds(), st.lists(st.sampled_from(list(Kind)), max_size=4))
def test_never_reap_a_holder_that_may_be_alive(
    world: tuple[Snapshot, bool, float], kinds: list[Kind]
) -> None:
    snap, holder_dead, now = world
    history = tuple(Done(kind=k, at=now - 50 - i) for i, k in enumerate(kinds))
    assert snap.timing.lease is not None
    if death_evidence(snap.timing.lease, snap.pods, baseline=snap.baseline) is not None:
        assert holder_dead
    d = decide(snap, history, now=now, policy=POLICY)
    if d.kind is Kind.REAP:
        assert holder_dead
    if d.kind is Kind.FALLBACK:
        validity = snap.timing.validity(now=now, default_duration_s=15)
        assert validity in (Validity.FREE, Validity.EXPIRED)
        assert not any(p.can_take_over for p in snap.pods)
    if not snap.api_reachable or now - snap.taken_at > POLICY.max_age_s:
        assert d.kind is Kind.WAIT


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_the_evidence_is_found_when_the_report_is_fresh_and_clear(
    world: tuple[Snapshot, bool, float],
) -> None:
    # Not a safety property: the engine is not uselessly timid. A dead holder whose
    # container ended more than a second after it acquired is eventually provable.
    snap, _, _ = world
    assert snap.timing.lease is not None
    pod = snap.pods[0]
    c = pod.container
    assume_clear = (
        c is not None
        and c.state == "terminated"
        and c.finished_at is not None
        and snap.timing.lease.acquire_time is not None
        and c.finished_at - snap.timing.lease.acquire_time > dt.timedelta(seconds=1)
        and (snap.baseline is None or c.restarts >= snap.baseline.restarts)
    )
    if assume_clear:
        assert death_evidence(snap.timing.lease, snap.pods, baseline=snap.baseline)
