"""The lab's oracle beyond overlaps: the guards' Fallbacks and Reaps judged against the
lead intervals, the manifests byte for byte, and `kubehoist lab leaders` on them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from kubehoist.cli import cli
from kubehoist.lab import freezes, logarchive, oracle
from tests.unit.test_lab_leaders import (
    KCM,
    NOW,
    T0,
    acquired,
    became,
    cri,
    lab_root,
    s,
    write_instance,
)


def guard_line(t: datetime, node: str, action: str, **extra: object) -> str:
    record = {
        "event": "action",
        "action": action,
        "reason": "test",
        "ts": t.isoformat(),
        "component": KCM,
        "node": node,
        "guard": f"{node}_g",
        **extra,
    }
    return cri(t + s(0.002), json.dumps(record), stream="stdout")


def write_guard(root: Path, node: str, lines: list[str]) -> None:
    pod = f"kube-system_kubehoist-guard-{KCM}-{node}_uid-g-{node}"
    directory = root / "nodes" / node / logarchive.ARCHIVE_DIR / pod / "guard"
    directory.mkdir(parents=True, exist_ok=True)
    noise = cri(T0, '{"event": "start"}', stream="stdout")
    (directory / "0.log").write_text(noise + "".join(lines))


def leader(root: Path, *, until: float | None, identity: str = "dep-a_1") -> None:
    """A Deployment pod on w-1 leads from T0+1; it exits at `until` (None: running)."""
    write_instance(
        root,
        node="w-1",
        pod=f"{KCM}-dep-a",
        lines=[acquired(T0 + s(1)), became(T0 + s(1.001), identity)],
        started=T0,
        finished=T0 + s(until) if until is not None else None,
        exit_code=137 if until is not None else None,
        reason="Error" if until is not None else None,
        container_id="d" * 64,
    )


def test_a_fallback_after_the_leader_exited_is_fine(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=20)
    write_guard(root, "cp-1", [guard_line(T0 + s(55), "cp-1", "Fallback", result="unparked")])
    judged = oracle.judge(root, now=NOW)
    assert judged.ok and judged.violations == ()
    (action,) = judged.actions
    assert (action.node, action.action, action.time) == ("cp-1", "Fallback", T0 + s(55))


def test_a_fallback_while_a_leader_runs_is_a_violation(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=None)
    write_guard(root, "cp-2", [guard_line(T0 + s(40), "cp-2", "Fallback", result="unparked")])
    judged = oracle.judge(root, now=NOW)
    assert not judged.ok
    (v,) = judged.violations
    assert v.kind == oracle.FALLBACK_WHILE_LED and v.time == T0 + s(40)
    assert "the guard on cp-2 fell back" in v.text and f"{KCM}-dep-a/w-1/0 led" in v.text


def test_a_fallback_while_the_leader_is_frozen_is_fine(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=None)
    freezes.record_freeze(root, freezes.Freeze(container_id="d" * 64, stopped=T0 + s(5)))
    write_guard(root, "cp-2", [guard_line(T0 + s(40), "cp-2", "Fallback", result="unparked")])
    assert oracle.judge(root, now=NOW).violations == ()


def test_a_fallback_within_the_measurement_error_of_the_exit_is_fine(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=20)
    write_guard(root, "cp-1", [guard_line(T0 + s(19.95), "cp-1", "Fallback")])
    assert oracle.judge(root, now=NOW).violations == ()
    write_guard(root, "cp-1", [guard_line(T0 + s(19.8), "cp-1", "Fallback")])
    assert len(oracle.judge(root, now=NOW).violations) == 1


def test_a_reap_of_a_dead_holder_is_fine(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=20)
    write_guard(
        root, "cp-3", [guard_line(T0 + s(21), "cp-3", "Reap", holder="dep-a_1", result="released")]
    )
    judged = oracle.judge(root, now=NOW)
    assert judged.ok and judged.warnings == ()


def test_a_reap_of_a_live_holder_is_a_violation(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=30)
    write_guard(
        root, "cp-3", [guard_line(T0 + s(21), "cp-3", "Reap", holder="dep-a_1", result="released")]
    )
    (v,) = oracle.judge(root, now=NOW).violations
    assert v.kind == oracle.REAP_ALIVE
    assert "reaped dep-a_1" in v.text and "exited at" in v.text


def test_a_reap_of_a_running_holder_is_a_violation(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=None)
    write_guard(
        root, "cp-3", [guard_line(T0 + s(21), "cp-3", "Reap", holder="dep-a_1", result="released")]
    )
    (v,) = oracle.judge(root, now=NOW).violations
    assert "still running" in v.text


def test_a_reap_that_released_nothing_or_names_no_known_holder_is_not_judged(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    leader(root, until=None)
    write_guard(
        root,
        "cp-3",
        [
            guard_line(
                T0 + s(21), "cp-3", "Reap", holder="dep-a_1", result="the Lease changed meanwhile"
            ),
            guard_line(T0 + s(22), "cp-3", "Reap", holder="ghost_9", result="released"),
        ],
    )
    judged = oracle.judge(root, now=NOW)
    assert judged.violations == ()
    (warning,) = judged.warnings
    assert "no instance with identity ghost_9" in warning


def test_manifests_must_be_the_original_bytes_in_one_place(tmp_path: Path) -> None:
    roots = {n: tmp_path / n for n in ("cp-1", "cp-2", "cp-3")}
    name = f"{KCM}.yaml"
    for n, r in roots.items():
        (r / oracle.PARKED_DIR).mkdir(parents=True)
        (r / oracle.MANIFESTS_DIR).mkdir(parents=True)
        (r / oracle.PARKED_DIR / name).write_bytes(f"orig {n}\n".encode())
    expected = {n: f"orig {n}\n".encode() for n in roots}
    assert oracle.check_manifests(roots, name, expected) == []
    (roots["cp-2"] / oracle.PARKED_DIR / name).write_bytes(b"orig cp-2 \n")
    (roots["cp-3"] / oracle.MANIFESTS_DIR / name).write_bytes(b"orig cp-3\n")
    (roots["cp-1"] / oracle.PARKED_DIR / name).unlink()
    texts = [v.text for v in oracle.check_manifests(roots, name, expected)]
    assert texts == [
        f"node cp-1: {roots['cp-1'] / oracle.PARKED_DIR / name} is missing",
        f"node cp-2: {roots['cp-2'] / oracle.PARKED_DIR / name} differs from the original "
        "(11 bytes)",
        f"node cp-3: {roots['cp-3'] / oracle.MANIFESTS_DIR / name} exists as well",
    ]
    # After a rollback: in place.
    assert len(oracle.check_manifests(roots, name, expected, parked=False)) == 3


def test_cli_shows_a_frozen_leader_apart_and_exits_0(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=49)
    write_instance(
        root, node="w-2", pod=f"{KCM}-dep-b", lines=[acquired(T0 + s(30))], started=T0 + s(2)
    )
    freezes.record_freeze(
        root, freezes.Freeze(container_id="d" * 64, stopped=T0 + s(10), resumed=T0 + s(40))
    )
    result = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "FROZEN LEADER" in result.output and "client-go's allowance" in result.output


def test_cli_exits_1_on_a_guard_violation(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    leader(root, until=None)
    write_guard(root, "cp-2", [guard_line(T0 + s(40), "cp-2", "Fallback")])
    result = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root), "-o", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["violations"][0]["kind"] == oracle.FALLBACK_WHILE_LED
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: {KCM}: 1 guard violation(s); first: the guard on cp-2")
