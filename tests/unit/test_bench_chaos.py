"""bench/chaos.py's pure parts: the seeded schedule, the per-kind summary, what counts
as a failed round, and kinds that cannot run being reported as such."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest
from bench import chaos


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


def test_summary_per_kind_and_not_run_kinds_are_not_passed() -> None:
    rounds = [
        rnd(1, "leader-sigkill"),
        rnd(2, "leader-sigkill", t_valid=111.0, frozen=["x"]),
        chaos.Round(n=3, kind="etcd-restart", status=chaos.NOT_RUN),
    ]
    s = chaos.summarize(rounds, ["leader-sigkill", "etcd-restart"])
    assert s["etcd-restart"] == {"rounds": 1, "status": chaos.NOT_RUN}
    k = s["leader-sigkill"]
    assert (k["rounds"], k["recovered"], k["frozen_leader"], k["two_leaders"]) == (2, 2, 1, 0)
    assert k["leader_s"] == {"median": 7.0, "p95": 11.0, "max": 11.0}
    text = chaos.table(s)
    assert chaos.NOT_RUN in text and "7.0 / 11.0 / 11.0" in text


def test_failures_are_rounds_not_recovered_or_with_findings_never_not_run_ones() -> None:
    rounds = [
        rnd(1, "leader-sigkill"),
        rnd(2, "leader-freeze", frozen=["client-go's"]),  # not a failure
        rnd(3, "rollout", overlaps=["two leaders"]),
        rnd(4, "scale-to-zero", status="not recovered", error="TimeoutError: x"),
        rnd(5, "cold-start", lost=["configmap/keep-0: 404"]),
        chaos.Round(n=6, kind="apiserver-restart", status=chaos.NOT_RUN),
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
