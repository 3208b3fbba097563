"""bench/chaos.py's pure parts: the seeded schedule, the per-kind summary, what counts
as a failed round, and a run cut short judged whole."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bench import chaos

from kubehoist.lab.instances import LeadersError
from kubehoist.measure import Sample


def test_the_schedule_is_seeded_and_balanced_in_blocks() -> None:
    one = chaos.schedule(chaos.KINDS, 3 * len(chaos.KINDS) + 2, seed=7)
    assert one == chaos.schedule(chaos.KINDS, 3 * len(chaos.KINDS) + 2, seed=7)
    assert one != chaos.schedule(chaos.KINDS, 3 * len(chaos.KINDS) + 2, seed=8)
    counts = Counter(one[: 3 * len(chaos.KINDS)])
    assert set(counts.values()) == {3} and set(counts) == set(chaos.KINDS)
    assert chaos.schedule(["a", "b"], 1, seed=1)[0] in {"a", "b"}


def test_parse_kinds_names_the_unknown_one() -> None:
    assert chaos.parse_kinds("leader-sigkill, cold-start") == ["leader-sigkill", "cold-start"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown kind\(s\) nope"):
        chaos.parse_kinds("leader-sigkill,nope")


def test_p95_is_the_nearest_rank() -> None:
    assert chaos.p95([1.0]) == 1.0
    assert chaos.p95([float(i) for i in range(1, 21)]) == 19.0
    assert chaos.p95([float(i) for i in range(1, 101)]) == 95.0


def rnd(n: int, kind: str, **kw: object) -> chaos.Round:
    r = chaos.Round(n=n, kind=kind, status="recovered", t0=100.0, t_valid=103.0)
    r.t_reconciled, r.t_settled = 104.5, 130.0
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_summary_per_kind() -> None:
    rounds = [
        rnd(1, "leader-sigkill"),
        rnd(2, "leader-sigkill", t_valid=111.0, frozen=["x"]),
        rnd(3, "etcd-restart", status="not recovered", t_valid=None),
    ]
    s = chaos.summarize(rounds, ["leader-sigkill", "etcd-restart", "cold-start"])
    assert "cold-start" not in s  # no round of it
    e = s["etcd-restart"]
    assert (e["rounds"], e["recovered"], e["leader_s"]) == (1, 0, None)
    k = s["leader-sigkill"]
    assert (k["rounds"], k["recovered"], k["frozen_leader"], k["two_leaders"]) == (2, 2, 1, 0)
    assert k["leader_s"] == {"median": 7.0, "p95": 11.0, "max": 11.0}
    text = chaos.table(s)
    assert "7.0 / 11.0 / 11.0" in text


def test_failures_are_rounds_not_recovered_or_with_findings() -> None:
    rounds = [
        rnd(1, "leader-sigkill"),
        rnd(2, "leader-freeze", frozen=["client-go's"]),  # not a failure
        rnd(3, "rollout", overlaps=["two leaders"]),
        rnd(4, "scale-to-zero", status="not recovered", error="TimeoutError: x"),
        rnd(5, "cold-start", lost=["configmap/keep-0: 404"]),
    ]
    result = {"rounds": [{**r.__dict__} for r in rounds]}
    got = chaos.failures(result)
    assert [f.split(":")[0] for f in got] == ["#3 rollout", "#4 scale-to-zero", "#5 cold-start"]
    assert "not recovered (TimeoutError: x)" in got[1]


def test_rounds_of_earlier_runs_are_read_back_from_json_or_partial(tmp_path: Path) -> None:
    rounds = [rnd(1, "leader-sigkill"), rnd(2, "cold-start", lost=["configmap/keep-1: 404"])]
    full = tmp_path / "run.json"
    full.write_text(json.dumps({"rounds": [chaos.round_json(r) for r in rounds[:1]]}))
    partial = tmp_path / "run2.json.partial"
    partial.write_text(json.dumps([chaos.round_json(r) for r in rounds[1:]]))
    back = chaos.rounds_from([full, partial])
    assert back == rounds
    assert chaos.report([full, partial]) == 1  # a lost object is a failed round


def test_containerd_outages_of_recorded_rounds_start_at_the_restart() -> None:
    r = rnd(7, "containerd-kill", node="cp-2", t0_wall="2026-12-03T06:00:00+00:00")
    r.t0, r.t_heal = 100.0, 105.5
    other = rnd(8, "kubelet-kill", node="cp-1", t0_wall="2026-12-03T06:01:00+00:00")
    other.t_heal = 110.0
    [(node, start, end)] = chaos.containerd_outages([r, other])
    assert node == "cp-2"
    assert start.isoformat() == "2026-12-03T06:00:05.500000+00:00"
    assert (end - start).total_seconds() == chaos.CONTAINERD_OUTAGE_S


def test_a_run_cut_short_is_judged_whole_from_its_partial(tmp_path: Path) -> None:
    partial = tmp_path / "run.json.partial"
    partial.write_text(json.dumps([chaos.round_json(rnd(1, "leader-sigkill", tolerance_ms=250.0))]))
    with pytest.raises(LeadersError, match="not a lab root"):
        chaos.judge_cut_short(partial, tmp_path / "nowhere")
    (tmp_path / "lab" / "nodes").mkdir(parents=True)  # a lab with no logs
    result = chaos.judge_cut_short(partial, tmp_path / "lab")
    assert result["cut_short"] and result["rounds_recorded"] == 1
    assert result["tolerance_ms"] == 250.0  # the largest error the run measured
    assert result["summary"]["leader-sigkill"]["rounds"] == 1
    assert result["final_oracle"]["intervals"] == 0
    assert chaos.failures(result) == []
    empty = tmp_path / "empty.json.partial"
    empty.write_text("[]")
    with pytest.raises(SystemExit, match="no rounds recorded"):
        chaos.judge_cut_short(empty, tmp_path / "lab")


def test_the_outage_is_the_longest_wait_of_a_probe_never_answered_until_it_stopped() -> None:
    samples = [
        Sample(seq=0, sent=10.0, reconciled=10.2),
        Sample(seq=1, sent=10.25, reconciled=14.0),
        Sample(seq=2, sent=10.5, reconciled=None),  # never answered: waits until 20.0
    ]
    assert chaos.longest_wait(samples, until=20.0) == 9.5
    assert chaos.longest_wait(samples[:2], until=20.0) == 3.75
    assert chaos.longest_wait([], until=20.0) is None
    rounds = [rnd(1, "rollout", outage_s=2.5), rnd(2, "rollout", outage_s=0.5)]
    s = chaos.summarize(rounds, ["rollout"])
    assert s["rollout"]["outage_s"] == {"median": 1.5, "p95": 2.5, "max": 2.5}
    assert "1.5 / 2.5 / 2.5" in chaos.table(s)


def test_a_run_resumes_only_on_its_own_schedule_with_rounds_left(tmp_path: Path) -> None:
    kinds = chaos.schedule(chaos.KINDS, 20, seed=3)
    partial = tmp_path / "run.json.partial"
    partial.write_text(
        json.dumps([chaos.round_json(rnd(i + 1, k)) for i, k in enumerate(kinds[:5])])
    )
    done = chaos.resumable(partial, kinds)
    assert [r.kind for r in done] == kinds[:5] and [r.n for r in done] == [1, 2, 3, 4, 5]
    other = chaos.schedule(chaos.KINDS, 20, seed=4)
    with pytest.raises(ValueError, match="not the start of this schedule"):
        chaos.resumable(partial, other)
    with pytest.raises(ValueError, match="all 5 rounds were run already"):
        chaos.resumable(partial, kinds[:5])


def test_findings_are_reported_once_also_after_a_resume() -> None:
    def overlap(a: str, b: str, minute: int) -> SimpleNamespace:
        start = datetime(2026, 12, 3, 6, minute, tzinfo=UTC)
        return SimpleNamespace(
            first=SimpleNamespace(instance=SimpleNamespace(name=a)),
            second=SimpleNamespace(instance=SimpleNamespace(name=b)),
            start=start,
        )

    def report(overlaps: list[SimpleNamespace], violations: list[str]) -> Any:
        return SimpleNamespace(
            leaders=SimpleNamespace(overlaps=overlaps[:1], frozen=overlaps[1:]),
            violations=[SimpleNamespace(text=v) for v in violations],
        )

    run = chaos.Chaos.__new__(chaos.Chaos)  # no lab: only what the oracle found so far
    run.seen_overlaps, run.seen_violations = set(), set()
    old = [overlap("a", "b", 1), overlap("c", "d", 2)]
    got, vs = run._new_findings(report(old, ["reap of x"]))  # what a resume marks seen
    assert (len(got), vs) == (2, ["reap of x"])
    new = overlap("e", "f", 3)
    got, vs = run._new_findings(report([old[0], old[1], new], ["reap of x", "fallback y"]))
    assert got == [new] and vs == ["fallback y"]
    assert run._new_findings(report([old[0], new], ["fallback y"])) == ([], [])
