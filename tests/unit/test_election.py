"""Pure Lease semantics: identities, candidate mapping, validity by our clock, verdicts."""

from __future__ import annotations

import string
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from kubehoist.election import (
    Candidate,
    CandidateKind,
    LeaseRecord,
    Role,
    Validity,
    Verdict,
    assess,
    first_observation,
    host_is_node,
    match_holder,
    node_of_host,
    parse_identity,
)

U1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
U2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def rec(holder: str | None = f"cp-1_{U1}", *, renew: int = 0, duration: int = 15) -> LeaseRecord:
    from datetime import UTC, datetime, timedelta

    base = datetime(2026, 1, 1, tzinfo=UTC)
    return LeaseRecord(
        namespace="kube-system",
        name="kube-controller-manager",
        holder=holder,
        duration_s=duration,
        acquire_time=base,
        renew_time=base + timedelta(seconds=renew),
        transitions=0,
    )


def cand(
    name: str,
    *,
    kind: CandidateKind = CandidateKind.DEPLOYMENT,
    node: str = "w-1",
    host_network: bool = False,
    ready: bool = True,
    terminating: bool = False,
) -> Candidate:
    return Candidate(
        component="kube-controller-manager",
        name=name,
        namespace="kube-system",
        uid=f"uid-{name}",
        kind=kind,
        node=node,
        host_network=host_network,
        ready=ready,
        terminating=terminating,
    )


STATIC = cand(
    "kube-controller-manager-cp-1", kind=CandidateKind.STATIC, node="cp-1", host_network=True
)
DEPLOY = cand("kube-controller-manager-7d9f8-abcde")


# --- identities --------------------------------------------------------------------


def test_identity_splits_at_last_underscore() -> None:
    ident = parse_identity(f"my_host_{U1}")
    assert ident.hostname == "my_host"
    assert ident.uuid == U1
    assert ident.well_formed


def test_identity_without_uuid_is_not_well_formed() -> None:
    for raw in ("cp-1", "cp-1_notauuid", f"_{U1}", ""):
        ident = parse_identity(raw)
        assert not ident.well_formed
        assert ident.hostname == raw


hostnames = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-._", min_size=1, max_size=70
)


@given(host=hostnames, uuid=st.uuids())
def test_identity_round_trips(host: str, uuid: object) -> None:
    ident = parse_identity(f"{host}_{uuid}")
    assert ident.hostname == host
    assert ident.uuid == str(uuid)


@given(raw=st.text(max_size=80))
def test_identity_never_fails(raw: str) -> None:
    ident = parse_identity(raw)
    assert ident.raw == raw
    assert ident.well_formed == (ident.uuid is not None)


# --- mapping -----------------------------------------------------------------------


def test_static_pod_matches_by_node_name_case_blind() -> None:
    assert match_holder(parse_identity(f"CP-1_{U1}"), [STATIC, DEPLOY]) == (STATIC,)


def test_static_pod_matches_when_the_hostname_is_an_fqdn_of_its_node() -> None:
    """A kubelet with --hostname-override (kubeadm's nodeRegistration.name): the Node is
    cp-2, the machine (hence a hostNetwork pod's identity) says its FQDN."""
    cp2 = cand(
        "kube-controller-manager-cp-2", kind=CandidateKind.STATIC, node="cp-2", host_network=True
    )
    ident = parse_identity(f"cp-2.lab.example.internal_{U1}")
    assert match_holder(ident, [STATIC, cp2, DEPLOY]) == (cp2,)
    # ... and the other way round: an FQDN node name, a short hostname.
    fq = cand(
        "kcm-x", kind=CandidateKind.STATIC, node="ip-10-0-0-7.ec2.internal", host_network=True
    )
    assert match_holder(parse_identity(f"ip-10-0-0-7_{U1}"), [fq]) == (fq,)
    # A Deployment pod's identity is its own name, never loosely matched.
    assert match_holder(parse_identity(f"kube-controller-manager.x_{U1}"), [DEPLOY]) == ()


def test_host_is_node() -> None:
    assert host_is_node("cp-2.lab.kubehoist.internal", "cp-2")
    assert host_is_node("CP-2", "cp-2.example.com.")
    assert not host_is_node("cp-2.a", "cp-2.b")
    assert not host_is_node("cp-20", "cp-2")
    assert node_of_host("cp-2.x", ["cp-1", "cp-2", "cp-3"]) == "cp-2"
    assert node_of_host("cp-2", ["cp-2", "cp-2.x"]) == "cp-2"  # an exact match wins
    assert node_of_host("cp-9", ["cp-1"]) is None


def test_deployment_pod_matches_by_pod_name() -> None:
    assert match_holder(parse_identity(f"{DEPLOY.name}_{U2}"), [STATIC, DEPLOY]) == (DEPLOY,)


def test_long_pod_names_are_truncated_like_the_kubelet() -> None:
    long = "kube-controller-manager-" + "x" * 38 + "-abcde"  # 68 chars
    c = cand(long)
    assert c.hostname == long[:63].rstrip("-.")
    assert c.hostname is not None
    assert match_holder(parse_identity(f"{c.hostname}_{U1}"), [c]) == (c,)


def test_spec_hostname_wins_over_pod_name() -> None:
    c = replace(DEPLOY, spec_hostname="kcm")
    assert match_holder(parse_identity(f"kcm_{U1}"), [c]) == (c,)


def test_host_network_deployment_pod_on_the_static_node_is_ambiguous() -> None:
    twin = cand("kcm-hostnet", node="cp-1", host_network=True)
    assert match_holder(parse_identity(f"cp-1_{U1}"), [STATIC, twin]) == (STATIC, twin)


# --- validity ----------------------------------------------------------------------


def test_one_read_is_unknown_until_a_lease_duration_has_passed() -> None:
    obs = first_observation(rec(), now=100.0)
    assert obs.validity(now=100.0) is Validity.UNKNOWN
    assert obs.validity(now=114.9) is Validity.UNKNOWN
    assert obs.validity(now=115.0) is Validity.EXPIRED


def test_a_seen_change_makes_it_valid_for_a_duration_from_our_sighting() -> None:
    obs = first_observation(rec(renew=0), now=100.0).observe(rec(renew=2), now=101.0)
    assert obs.changed_at == 101.0
    assert obs.validity(now=115.9) is Validity.VALID
    assert obs.validity(now=116.0) is Validity.EXPIRED


def test_the_same_record_again_is_not_a_change() -> None:
    obs = first_observation(rec(), now=100.0).observe(rec(), now=105.0)
    assert obs.changed_at is None


def test_resource_version_alone_is_not_a_change() -> None:
    obs = first_observation(rec(), now=100.0).observe(
        replace(rec(), resource_version="999"), now=105.0
    )
    assert obs.changed_at is None


def test_renew_time_is_never_compared_with_our_clock() -> None:
    # A renewTime far in the past (skewed holder clock) changes nothing.
    from datetime import UTC, datetime

    old = replace(rec(), renew_time=datetime(1999, 1, 1, tzinfo=UTC))
    obs = first_observation(rec(renew=0), now=0.0).observe(old, now=1.0)
    assert obs.validity(now=2.0) is Validity.VALID


def test_no_holder_is_free() -> None:
    assert first_observation(rec(holder=None), now=0).validity(now=0) is Validity.FREE


@given(
    start=st.floats(min_value=0, max_value=1e6),
    changes=st.lists(st.floats(min_value=0.01, max_value=30), min_size=1, max_size=20),
    after=st.floats(min_value=0, max_value=40),
)
def test_validity_is_measured_from_the_last_change(
    start: float, changes: list[float], after: float
) -> None:
    obs = first_observation(rec(renew=0), now=start)
    t = start
    for i, step in enumerate(changes, start=1):
        t += step
        obs = obs.observe(rec(renew=i), now=t)
    v = obs.validity(now=t + after)
    assert v is (Validity.VALID if after < 15 else Validity.EXPIRED)


# --- verdicts ----------------------------------------------------------------------


def verdict(holder: str | None, cands: list[Candidate], *, watched: bool = False) -> Verdict:
    obs = first_observation(rec(holder), now=0)
    if watched:
        obs = obs.observe(rec(holder, renew=2), now=1)
    return assess(component="kcm", observation=obs, candidates=cands, now=1).verdict


def test_static_leader_alone_is_no_standby() -> None:
    assert verdict(f"cp-1_{U1}", [STATIC]) is Verdict.NO_STANDBY


def test_static_leader_with_a_ready_deployment_pod_is_healthy() -> None:
    a = assess(
        component="kcm",
        observation=first_observation(rec(), now=0),
        candidates=[STATIC, DEPLOY],
        now=0,
    )
    assert a.verdict is Verdict.HEALTHY
    assert a.leader == STATIC
    assert a.role(STATIC.name) is Role.LEADER
    assert a.role(DEPLOY.name) is Role.STANDBY
    assert a.standbys == 1


def test_not_ready_standbys_do_not_count() -> None:
    assert verdict(f"cp-1_{U1}", [STATIC, replace(DEPLOY, ready=False)]) is Verdict.NO_STANDBY


def test_terminating_standbys_do_not_count() -> None:
    assert verdict(f"cp-1_{U1}", [STATIC, replace(DEPLOY, terminating=True)]) is Verdict.NO_STANDBY


def test_no_candidates() -> None:
    assert verdict(f"cp-1_{U1}", []) is Verdict.NO_CANDIDATES


def test_no_lease() -> None:
    a = assess(component="kcm", observation=None, candidates=[STATIC], now=0)
    assert a.verdict is Verdict.NO_LEASE


def test_released_lease_is_expired() -> None:
    assert verdict(None, [STATIC, DEPLOY]) is Verdict.EXPIRED


def test_lease_unchanged_for_a_duration_is_expired() -> None:
    obs = first_observation(rec(), now=0)
    a = assess(component="kcm", observation=obs, candidates=[STATIC, DEPLOY], now=15)
    assert a.verdict is Verdict.EXPIRED
    assert a.leader is None
    assert a.role(STATIC.name) is Role.STANDBY


def test_holder_unknown_and_unknown_format() -> None:
    assert verdict(f"elsewhere_{U1}", [STATIC, DEPLOY]) is Verdict.HOLDER_UNKNOWN
    assert verdict("cp-1", [STATIC, DEPLOY]) is Verdict.HOLDER_UNKNOWN


def test_ambiguous_holder() -> None:
    twin = cand("kcm-hostnet", node="cp-1", host_network=True)
    assert verdict(f"cp-1_{U1}", [STATIC, twin, DEPLOY]) is Verdict.HOLDER_AMBIGUOUS


def test_leader_not_ready() -> None:
    assert verdict(f"cp-1_{U1}", [replace(STATIC, ready=False), DEPLOY]) is Verdict.LEADER_NOT_READY


@given(
    ready=st.lists(st.booleans(), min_size=0, max_size=6),
    leader_ready=st.booleans(),
)
def test_healthy_iff_ready_leader_and_a_ready_standby(
    ready: list[bool], leader_ready: bool
) -> None:
    others = [cand(f"kcm-{i}", ready=r) for i, r in enumerate(ready)]
    v = verdict(f"cp-1_{U1}", [replace(STATIC, ready=leader_ready), *others], watched=True)
    expected_healthy = leader_ready and any(ready)
    assert (v is Verdict.HEALTHY) == expected_healthy
