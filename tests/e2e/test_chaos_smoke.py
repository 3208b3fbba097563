"""The chaos benchmark's short seeded smoke: bench/chaos.py's own code on its own HA lab
(three control planes, two workers, pivoted, guarded), one round of every fault kind.
Every round must recover, with no two leaders beyond the measured error, no guard
violation, no object lost and every manifest back byte for byte; the whole run is
judged once more at its end. The long run (hundreds of rounds) is the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import pytest
from bench import chaos, common

from tests.e2e.conftest import host_port, kubehoist, lab_root

pytestmark = pytest.mark.lab

SEED = 12
PORT_OFFSET = 30  # beside the session lab's port
RENEW_DEADLINE_MS = 10_000  # the double leadership a wrong release of the Lease would cause


@pytest.mark.timeout(3000)  # a block of 14 rounds: ~10 min on a quiet machine
def test_one_round_of_every_kind_recovers_with_the_oracle_clean() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces); run them as root")
    root = lab_root().with_name(f"{lab_root().name}-chaos").resolve()
    lab = common.Lab(root=root, port=host_port() + PORT_OFFSET)
    kinds = chaos.schedule(chaos.KINDS, len(chaos.KINDS), SEED)
    args = argparse.Namespace(seed=SEED)
    started = time.monotonic()
    try:
        with common.lab_up(lab, keep=True, control_planes=3):
            result = asyncio.run(chaos.bench(args, lab, kinds))
    finally:
        if not os.environ.get("KUBEHOIST_TEST_KEEP_LAB"):
            kubehoist("lab", "down", "--purge", "--root", str(root), check=False)
    print(f"\n[chaos smoke] seed {SEED}, wall {time.monotonic() - started:.0f}s")
    print(chaos.table(result["summary"]))
    print(f"[chaos smoke] log line stamping: {result['line_stamp_lateness']}")
    print(f"[chaos smoke] SIGKILL -> finishedAt: {result['exit_stamp_lateness_ms']}")

    rounds = result["rounds"]
    assert sorted(r["kind"] for r in rounds) == sorted(chaos.KINDS)
    assert chaos.failures(result) == []
    for r in rounds:
        assert r["status"] == "recovered" and r["leader_s"] is not None, r
        assert r["reconcile_s"] is not None, r
    # A frozen leader's overlap is shown apart (client-go's allowance), only for a freeze.
    assert all(not r["frozen"] for r in rounds if r["kind"] != "leader-freeze")
    final = result["final_oracle"]
    assert final["intervals"] > len(rounds) // 2, final  # the leaders were seen at all
    assert final["guard_actions"] > 0, final  # total-loss rounds made the guards act
    # The oracle forgives only the measurement error (the latest stamp measured, at
    # least 100 ms), and that stays far below the double leadership a wrong release
    # of the Lease would make.
    stamps = result["line_stamp_lateness"]
    assert stamps["lines"] > 0, stamps
    assert result["tolerance_ms"] < RENEW_DEADLINE_MS, (result["tolerance_ms"], stamps)
