"""The timeline: leader changes with lease gaps by our clock, no duplicates, no misses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kubehoist.election import Candidate, CandidateKind, LeaseRecord
from kubehoist.timeline import Event, Timeline

U1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
U2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
KCM = "kube-controller-manager"
W = datetime(2026, 1, 1, tzinfo=UTC)
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def rec(holder: str | None, renew: int, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(
        namespace="kube-system",
        name=KCM,
        holder=holder,
        duration_s=15,
        acquire_time=BASE,
        renew_time=BASE + timedelta(seconds=renew),
        transitions=transitions,
    )


STATIC = Candidate(
    component=KCM,
    name="kube-controller-manager-cp-1",
    namespace="kube-system",
    uid="u1",
    kind=CandidateKind.STATIC,
    node="cp-1",
    host_network=True,
    ready=True,
)
DEPLOY = Candidate(
    component=KCM,
    name="kcm-abc",
    namespace="kube-system",
    uid="u2",
    kind=CandidateKind.DEPLOYMENT,
    node="w-1",
    host_network=False,
    ready=True,
    ready_since=BASE,
)
A = f"cp-1_{U1}"
B = f"kcm-abc_{U2}"


def started() -> Timeline:
    tl = Timeline([KCM])
    tl.lease_seen(KCM, rec(A, 0), now=0.0, wall=W)
    tl.pod_seen(STATIC, now=0.0, wall=W)
    tl.pod_seen(DEPLOY, now=0.0, wall=W)
    events = tl.start(now=0.0, wall=W)
    assert [e.kind for e in events] == ["observing"]
    assert events[0].data["verdict"] == "Healthy"
    return tl


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_crash_then_takeover_measures_gap_from_expiry_by_our_clock() -> None:
    tl = started()
    for i in range(1, 6):  # A renews every 2 s until t=10
        assert tl.lease_seen(KCM, rec(A, 2 * i), now=2.0 * i, wall=W) == []
    # A dies. At t=25 (10 + 15) it expires by our clock.
    assert tl.tick(now=24.9, wall=W) == []
    expired = tl.tick(now=25.2, wall=W)
    assert kinds(expired) == ["lease_expired", "verdict_changed"]
    assert expired[0].data["since_last_renew_s"] == 15.2
    assert expired[0].data["measured"] is True
    assert tl.tick(now=26, wall=W) == []  # once
    events = tl.lease_seen(KCM, rec(B, 27, transitions=1), now=27.5, wall=W)
    change = events[0]
    assert change.kind == "leader_changed"
    assert change.data["previous_holder"] == A
    assert change.data["previous_pod"] == STATIC.name
    assert change.data["holder"] == B
    assert change.data["pod"] == DEPLOY.name
    assert change.data["lease_gap_s"] == 2.5  # 27.5 - (10 + 15)
    assert change.data["since_last_renew_s"] == 17.5
    assert change.data["measured"] is True
    assert change.data["missed_transitions"] == 0
    assert change.data["ready_since"] == "2026-01-01T00:00:00Z"


def test_takeover_seen_before_the_tick_still_times_from_expiry() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    events = tl.lease_seen(KCM, rec(B, 20, transitions=1), now=20.0, wall=W)
    assert events[0].data["lease_gap_s"] == 3.0  # 20 - (2 + 15)


def test_release_then_takeover_gap_is_from_the_release() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    released = tl.lease_seen(KCM, rec(None, 3), now=3.0, wall=W)
    assert kinds(released) == ["lease_released", "verdict_changed"]
    events = tl.lease_seen(KCM, rec(B, 5, transitions=1), now=5.5, wall=W)
    assert events[0].kind == "leader_changed"
    assert events[0].data["lease_gap_s"] == 2.5
    assert events[0].data["previous_holder"] is None


def test_handover_before_expiry_has_no_gap() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    events = tl.lease_seen(KCM, rec(B, 4, transitions=1), now=4.0, wall=W)
    assert events[0].data["lease_gap_s"] == 0.0


def test_a_relist_of_the_same_state_reports_nothing() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    assert tl.lease_seen(KCM, rec(A, 2), now=3.0, wall=W) == []
    assert tl.pod_seen(STATIC, now=3.0, wall=W) == []
    assert tl.pod_seen(DEPLOY, now=3.0, wall=W) == []


def test_transitions_missed_while_blind_are_counted_and_marked_unmeasured() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    tl.lease_interrupted(KCM, now=3.0)
    assert tl.tick(now=40.0, wall=W) == []  # blind: no expiry claimed
    events = tl.lease_seen(KCM, rec(B, 40, transitions=3), now=41.0, wall=W)
    assert events[0].kind == "leader_changed"
    assert events[0].data["missed_transitions"] == 2
    assert events[0].data["measured"] is False


def test_first_holder_never_seen_renewing_is_unmeasured() -> None:
    tl = started()
    events = tl.lease_seen(KCM, rec(B, 30, transitions=1), now=30.0, wall=W)
    assert events[0].data["measured"] is False
    assert events[0].data["lease_gap_s"] == 15.0  # 30 - (0 + 15): upper bound of the view


def test_candidates_come_go_and_get_ready() -> None:
    tl = started()
    new = replace(DEPLOY, name="kcm-def", uid="u3", ready=False)
    assert kinds(tl.pod_seen(new, now=1, wall=W)) == ["candidate_added"]
    ready = replace(new, ready=True, ready_since=BASE)
    assert kinds(tl.pod_seen(ready, now=2, wall=W)) == ["candidate_ready"]
    assert kinds(tl.pod_seen(replace(ready, terminating=True), now=3, wall=W)) == [
        "candidate_terminating"
    ]
    assert kinds(tl.pod_gone(KCM, "kcm-def", now=4, wall=W)) == ["candidate_removed"]
    assert tl.pod_gone(KCM, "kcm-def", now=5, wall=W) == []


def test_losing_the_only_standby_changes_the_verdict() -> None:
    tl = started()
    events = tl.pod_gone(KCM, DEPLOY.name, now=1, wall=W)
    assert kinds(events) == ["candidate_removed", "verdict_changed"]
    assert events[1].data == {
        "previous": "Healthy",
        "verdict": "NoStandby",
        "reason": "a leader but no Ready standby to fail over to",
    }


def test_json_has_the_stable_fields() -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 2), now=2.0, wall=W)
    change = tl.lease_seen(KCM, rec(B, 4, transitions=1), now=4.0, wall=W)[0]
    out = change.to_json(origin=1.0)
    assert list(out)[:4] == ["event", "time", "t", "component"]
    assert out["t"] == 3.0
    assert out["time"] == "2026-01-01T00:00:00.000Z"
    for key in (
        "previous_holder",
        "previous_pod",
        "holder",
        "pod",
        "node",
        "kind",
        "lease_gap_s",
        "since_last_renew_s",
        "measured",
        "transitions",
        "missed_transitions",
        "ready_since",
        "acquire_time",
    ):
        assert key in out


@given(
    script=st.lists(
        st.tuples(st.sampled_from([A, B, None]), st.floats(min_value=0.01, max_value=20)),
        min_size=1,
        max_size=30,
    ),
    repeats=st.integers(min_value=1, max_value=3),
)
def test_one_leader_changed_per_change_of_holder_however_often_replayed(
    script: list[tuple[str | None, float]], repeats: int
) -> None:
    tl = started()
    now, holder, expected, seen = 0.0, A, 0, 0
    for i, (new, step) in enumerate(script, start=1):
        now += step
        if new is not None and new != holder:
            expected += 1
        if new != holder:
            holder = new
        for _ in range(repeats):  # a relist replays the same state
            seen += kinds(tl.lease_seen(KCM, rec(holder, i), now=now, wall=W)).count(
                "leader_changed"
            )
            seen += kinds(tl.tick(now=now, wall=W)).count("leader_changed")
    assert seen == expected


@given(gap=st.floats(min_value=0, max_value=60), last=st.floats(min_value=0, max_value=100))
def test_gap_is_never_negative_and_since_last_renew_bounds_it(gap: float, last: float) -> None:
    tl = started()
    tl.lease_seen(KCM, rec(A, 1), now=last, wall=W)
    event = tl.lease_seen(KCM, rec(B, 2, transitions=1), now=last + gap, wall=W)[0]
    g = event.data["lease_gap_s"]
    s = event.data["since_last_renew_s"]
    assert isinstance(g, float) and isinstance(s, float)
    assert 0 <= g <= s + 1e-3
    assert abs(g - max(0.0, gap - 15)) < 2e-3
