"""Never two leaders: lead intervals from synthetic log archives (CRI-format logs and
the log keeper's state files), their overlaps, and `kubehoist lab leaders`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubehoist.cli import cli
from kubehoist.lab import freezes, instances, leaderlogs, leaders, logarchive

KCM = "kube-controller-manager"
SCHED = "kube-scheduler"
KCM_LEASE = "kube-system/kube-controller-manager"
T0 = datetime(2026, 11, 25, 7, 0, 0, 123456, tzinfo=UTC)


def cri(t: datetime, text: str, *, stream: str = "stderr", tag: str = "F") -> str:
    """A line as containerd writes it: RFC3339Nano (nanoseconds, trailing zeros
    trimmed), stream, tag, content."""
    nanos = f"{t.microsecond:06d}789".rstrip("0")
    stamp = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (f".{nanos}" if nanos else "")
    return f"{stamp}Z {stream} {tag} {text}\n"


def klog(
    t: datetime,
    message: str,
    *,
    severity: str = "I",
    source: str = "leaderelection.go:272",
    skew: timedelta = timedelta(0),
) -> str:
    """A klog line (stamped in some local time, which must not matter) in CRI format."""
    local = t + skew + timedelta(hours=9)
    header = f"{severity}{local:%m%d %H:%M:%S}.{local.microsecond:06d}    4242 {source}]"
    return cri(t, f"{header} {message}")


def acquired(t: datetime, lease: str = KCM_LEASE) -> str:
    return klog(t, f'"Successfully acquired lease" lock="{lease}"')


def attempting(t: datetime, lease: str = KCM_LEASE) -> str:
    return klog(t, f'"Attempting to acquire leader lease..." lock="{lease}"', source="l.go:258")


def renew_failed(t: datetime, lease: str = KCM_LEASE) -> str:
    return klog(
        t,
        f'"Failed to renew lease" lock="{lease}" err="context deadline exceeded"',
        source="leaderelection.go:304",
    )


def became(t: datetime, identity: str, lease: str = KCM_LEASE) -> str:
    return klog(
        t,
        f'"Event occurred" object="{lease}" fieldPath="" kind="Lease" '
        'apiVersion="coordination.k8s.io/v1" type="Normal" reason="LeaderElection" '
        f'message="{identity} became leader"',
        source="event.go:389",
    )


def lost(t: datetime) -> str:
    return klog(t, '"leaderelection lost/stopped"', severity="E", source="controllermanager.go:413")


def noise(t: datetime) -> str:
    return klog(
        t, '"Started controller" controller="garbage-collector-controller"', source="c.go:1"
    )


def write_instance(
    root: Path,
    *,
    node: str,
    pod: str,
    lines: list[str],
    started: datetime | None,
    finished: datetime | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    restart: int = 0,
    uid: str = "",
    container: str = KCM,
    state: bool = True,
    container_id: str = "",
    live: bool = True,
) -> Path:
    """An archived instance as the log keeper leaves it; `live`: the kubelet still
    has the container (its log under the node's /var/log/pods exists)."""
    uid = uid or f"uid-{pod}"
    container_id = container_id or f"{pod}-{restart}".encode().hex().ljust(64, "0")[:64]
    pod_dir = f"kube-system_{pod}_{uid}"
    node_root = root / "nodes" / node
    directory = node_root / logarchive.ARCHIVE_DIR / pod_dir / container
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{restart}.log"
    if (directory / name).exists():
        name = f"{restart}.{container_id[:12]}.log"
    log = directory / name
    log.write_text("".join(lines))
    log_path = f"/var/log/pods/{pod_dir}/{container}/{restart}.log"
    if live:
        live_log = node_root / log_path.lstrip("/")
        live_log.parent.mkdir(parents=True, exist_ok=True)
        live_log.write_text("".join(lines))
    if state:
        assert started is not None
        record = logarchive.ContainerRecord(
            container_id=container_id,
            state=logarchive.EXITED if finished else logarchive.RUNNING,
            namespace="kube-system",
            pod=pod,
            pod_uid=uid,
            container=container,
            restart_count=restart,
            log_path=log_path,
            started_at=started,
            finished_at=finished,
            exit_code=exit_code,
            reason=reason or "",
        )
        logarchive.write_json_atomic(
            logarchive.state_path(log), logarchive.state_document(record, node)
        )
    return log


def lab_root(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    (root / "nodes").mkdir(parents=True)
    (root / "lab.json").write_text("{}")
    return root


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def handover(root: Path, *, new_acquires_at: float, old_finished: float | None = 60.0) -> None:
    """The static pod leads from T0+1; a Deployment pod on w-1 acquires later."""
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[attempting(T0 + s(0.5)), acquired(T0 + s(1)), noise(T0 + s(2))],
        started=T0,
        finished=T0 + s(old_finished) if old_finished is not None else None,
        exit_code=137 if old_finished is not None else None,
        reason="Error" if old_finished is not None else None,
    )
    write_instance(
        root,
        node="w-1",
        pod=f"{KCM}-6f7d9c-abcde",
        lines=[attempting(T0 + s(5)), acquired(T0 + s(new_acquires_at)), noise(T0 + s(80))],
        started=T0 + s(4),
    )


NOW = T0 + s(120)


def test_a_handover_after_the_leader_died_has_no_overlap(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=76)
    report = leaders.analyze(root, now=NOW)
    assert report.ok and report.overlaps == ()
    assert [i.instance.name for i in report.intervals] == [
        f"{KCM}-cp-1/cp-1/0",
        f"{KCM}-6f7d9c-abcde/w-1/0",
    ]
    old, new = report.intervals
    assert old.acquired == T0 + s(1)
    assert old.until == T0 + s(60)
    assert old.ended_by == "exited" and old.describe_end() == "exited 137 (Error)"
    assert new.acquired == T0 + s(76) and new.until == NOW and new.still_leading
    assert report.warnings == ()


def test_two_leaders_at_once_are_reported_with_both_instances_and_the_seconds(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=30)  # the old leader runs until T0+60
    report = leaders.analyze(root, now=NOW)
    assert not report.ok
    (overlap,) = report.overlaps
    assert overlap.first.instance.pod == f"{KCM}-cp-1"
    assert overlap.second.instance.pod == f"{KCM}-6f7d9c-abcde"
    assert overlap.start == T0 + s(30) and overlap.end == T0 + s(60)
    assert overlap.seconds == pytest.approx(30.0)
    assert "both led for 30.000s" in overlap.describe()


def test_the_tolerance_is_the_measurement_error_only(tmp_path: Path) -> None:
    """5 s of overlap was forgiven by the old 10 s tolerance; now it counts, and only
    what is within the measurement error (100 ms) does not."""
    assert leaders.DEFAULT_TOLERANCE_S == leaders.TOLERANCE_MS / 1000 == 0.1
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=55)  # 5 s of overlap
    (overlap,) = leaders.analyze(root, now=NOW).overlaps
    assert overlap.seconds == pytest.approx(5.0) and overlap.kind == leaders.TWO_LEADERS
    assert leaders.analyze(root, now=NOW, tolerance=6.0).overlaps == ()


@pytest.mark.parametrize(("overlap_s", "flagged"), [(0.05, False), (0.1, False), (0.15, True)])
def test_an_overlap_within_the_measurement_error_does_not_count(
    tmp_path: Path, overlap_s: float, flagged: bool
) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=60 - overlap_s)
    assert bool(leaders.analyze(root, now=NOW).overlaps) is flagged


def test_a_leader_that_failed_to_renew_leads_until_its_exit(tmp_path: Path) -> None:
    """A reaper that released a live leader's Lease: the old one logs "Failed to renew
    lease" at its renew deadline but runs its controllers until it exits — a successor
    that acquired in between is a second leader (the old oracle ended the interval at
    the failed renewal and missed it)."""
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), renew_failed(T0 + s(20)), lost(T0 + s(20.2))],
        started=T0,
        finished=T0 + s(20.4),
        exit_code=1,
        reason="Error",
    )
    write_instance(
        root, node="w-1", pod=f"{KCM}-x-1", lines=[acquired(T0 + s(12))], started=T0 + s(3)
    )
    report = leaders.analyze(root, now=NOW)
    old = report.intervals[0]
    assert old.until == T0 + s(20.4) and old.ended_by == "exited"
    assert old.gave_up == T0 + s(20)
    (overlap,) = report.overlaps
    assert overlap.start == T0 + s(12) and overlap.end == T0 + s(20.4)


def test_a_successor_after_the_exit_is_no_overlap_even_if_it_acquired_after_renew_failed(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), renew_failed(T0 + s(20)), lost(T0 + s(20.2))],
        started=T0,
        finished=T0 + s(20.4),
        exit_code=1,
        reason="Error",
    )
    write_instance(
        root, node="w-1", pod=f"{KCM}-x-1", lines=[acquired(T0 + s(26))], started=T0 + s(3)
    )
    assert leaders.analyze(root, now=NOW).ok


def test_a_still_running_instance_that_logged_its_loss_leads_until_its_last_line(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), renew_failed(T0 + s(20)), noise(T0 + s(23))],
        started=T0,
    )
    write_instance(
        root, node="w-1", pod=f"{KCM}-x-1", lines=[acquired(T0 + s(22))], started=T0 + s(3)
    )
    report = leaders.analyze(root, now=NOW)
    old = report.intervals[0]
    assert old.until == T0 + s(23) and old.ended_by == "last line"
    assert "still running" in old.describe_end()
    (overlap,) = report.overlaps
    assert overlap.seconds == pytest.approx(1.0)


def test_leaderelection_lost_then_the_exit_ends_the_interval(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), lost(T0 + s(9))],
        started=T0,
        finished=T0 + s(9.5),
        exit_code=1,
        reason="Error",
    )
    (interval,) = leaders.analyze(root, now=NOW).intervals
    assert interval.until == T0 + s(9.5) and interval.ended_by == "exited"
    assert interval.gave_up == T0 + s(9)


def test_acquiring_again_in_one_instance_ends_the_first_interval_at_the_line_before(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[
            acquired(T0 + s(1)),
            renew_failed(T0 + s(20)),
            noise(T0 + s(21)),
            acquired(T0 + s(40)),
        ],
        started=T0,
    )
    first, second = leaders.analyze(root, now=NOW).intervals
    assert first.until == T0 + s(21) and first.ended_by == "last line"
    assert second.acquired == T0 + s(40) and second.still_leading


def test_the_identity_comes_from_the_became_leader_event(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), became(T0 + s(1.001), "cp-1_abc")],
        started=T0,
    )
    (interval,) = leaders.analyze(root, now=NOW).intervals
    assert interval.identity == "cp-1_abc"
    other = became(T0, "x_1", lease="kube-system/other").split(" ", 3)[3]
    assert leaderlogs.classify(leaderlogs.parse_klog(other).message, KCM_LEASE) is None  # type: ignore[union-attr]


# --- a frozen leader: client-go's allowance, shown apart ---------------------------------


def frozen_handover(
    root: Path, *, old_exit: float | None, resumed: float | None, record: bool = True
) -> None:
    """cp-1 leads from T0+1, is frozen at T0+10; w-1 acquires at T0+30 (the lease
    expired); cp-1 resumes at `resumed` and exits at `old_exit`."""
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1))]
        + ([renew_failed(T0 + s(old_exit - 0.5))] if old_exit is not None else []),
        started=T0,
        finished=T0 + s(old_exit) if old_exit is not None else None,
        exit_code=1 if old_exit is not None else None,
        reason="Error" if old_exit is not None else None,
        container_id="f" * 64,
    )
    write_instance(
        root, node="w-1", pod=f"{KCM}-x-1", lines=[acquired(T0 + s(30))], started=T0 + s(3)
    )
    if record:
        freezes.record_freeze(
            root, freezes.Freeze(container_id="f" * 64, stopped=T0 + s(10), node="cp-1")
        )
        if resumed is not None:
            freezes.record_freeze(
                root,
                freezes.Freeze(
                    container_id="f" * 64,
                    stopped=T0 + s(10),
                    resumed=T0 + s(resumed),
                    node="cp-1",
                ),
            )


def test_a_frozen_leader_acting_until_its_renew_deadline_after_waking_is_its_own_kind(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    frozen_handover(root, old_exit=50.9, resumed=40)  # its renew deadline + its exit
    report = leaders.analyze(root, now=NOW)
    assert report.ok and report.overlaps == ()
    (frozen,) = report.frozen
    assert frozen.kind == leaders.FROZEN and frozen.seconds == pytest.approx(20.9)
    assert frozen.freeze is not None and frozen.freeze.resumed == T0 + s(40)
    assert "client-go's allowance" in frozen.describe()
    assert report.to_json()["frozenOverlaps"][0]["kind"] == leaders.FROZEN


def test_a_frozen_leader_still_frozen_is_its_own_kind(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    frozen_handover(root, old_exit=None, resumed=None)
    report = leaders.analyze(root, now=NOW)
    assert report.overlaps == () and len(report.frozen) == 1


def test_a_woken_leader_acting_beyond_its_renew_deadline_is_two_leaders(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    frozen_handover(root, old_exit=51.5, resumed=40)  # 11.5 s after it woke
    report = leaders.analyze(root, now=NOW)
    assert report.frozen == ()
    (overlap,) = report.overlaps
    assert overlap.kind == leaders.TWO_LEADERS


def test_without_a_recorded_freeze_the_same_overlap_is_two_leaders(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    frozen_handover(root, old_exit=45, resumed=40, record=False)
    report = leaders.analyze(root, now=NOW)
    assert report.frozen == () and len(report.overlaps) == 1


def test_a_freeze_after_the_successor_acquired_explains_nothing(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=30)  # cp-1 exits at T0+60
    (cp1,) = [i for i in instances.find_instances(root) if i.node == "cp-1"]
    freezes.record_freeze(root, freezes.Freeze(container_id=cp1.container_id, stopped=T0 + s(35)))
    report = leaders.analyze(root, now=NOW)
    assert report.frozen == () and len(report.overlaps) == 1


def test_a_bad_freeze_journal_line_is_named(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    (root / freezes.FREEZES).parent.mkdir(parents=True)
    (root / freezes.FREEZES).write_text(
        '{"containerID": "a", "stopped": "2026-11-25T07:00:00Z"}\n{"stopped": 1}\n'
    )
    with pytest.raises(instances.LeadersError, match=r"freezes.jsonl:2: needs containerID"):
        freezes.read_freezes(root)


def test_without_finished_at_the_instance_leads_until_now(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=76, old_finished=None)
    report = leaders.analyze(root, now=NOW)
    old = next(i for i in report.intervals if i.instance.node == "cp-1")
    assert old.until == NOW and old.still_leading
    assert old.describe_end() == "still leading (running)"
    (overlap,) = report.overlaps
    assert overlap.seconds == pytest.approx((NOW - (T0 + s(76))).total_seconds())


def test_a_log_without_state_file_counts_as_running_with_a_warning(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root, node="cp-1", pod=f"{KCM}-cp-1", lines=[acquired(T0 + s(1))], started=None, state=False
    )
    report = leaders.analyze(root, now=NOW)
    (interval,) = report.intervals
    assert interval.acquired == T0 + s(1) and interval.until == NOW
    assert interval.describe_end() == "no state file"
    assert report.warnings == (f"{KCM}-cp-1/cp-1/0: no state file; taken as still running",)


def test_restarts_are_separate_instances_of_one_pod(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    pod = f"{KCM}-cp-1"
    write_instance(
        root,
        node="cp-1",
        pod=pod,
        restart=0,
        lines=[acquired(T0 + s(1))],
        started=T0,
        finished=T0 + s(30),
        exit_code=137,
        reason="Error",
    )
    write_instance(
        root, node="cp-1", pod=pod, restart=1, lines=[acquired(T0 + s(46))], started=T0 + s(30.1)
    )
    report = leaders.analyze(root, now=NOW)
    assert [i.instance.name for i in report.intervals] == [f"{pod}/cp-1/0", f"{pod}/cp-1/1"]
    assert report.ok


def test_times_are_containerds_not_klogs_local_stamps_even_across_new_year(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    started = datetime(2025, 12, 31, 23, 59, 50, tzinfo=UTC)
    when = datetime(2026, 1, 1, 0, 0, 5, 250000, tzinfo=UTC)
    line = klog(when, f'"Successfully acquired lease" lock="{KCM_LEASE}"', skew=s(-3600 * 30))
    write_instance(root, node="cp-1", pod=f"{KCM}-cp-1", lines=[line], started=started)
    (interval,) = leaders.analyze(root, now=when + s(60)).intervals
    assert interval.acquired == when


def test_a_line_split_into_partial_fragments_is_joined(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    text = acquired(T0 + s(1)).split(" ", 3)[3].rstrip("\n")
    fragments = [
        cri(T0 + s(1), text[:20], tag="P"),
        noise(T0 + s(1.5)).replace(" stderr ", " stdout "),  # the other stream meanwhile
        cri(T0 + s(2), text[20:50], tag="P"),
        cri(T0 + s(2.5), text[50:]),
    ]
    write_instance(root, node="cp-1", pod=f"{KCM}-cp-1", lines=fragments, started=T0)
    (interval,) = leaders.analyze(root, now=NOW).intervals
    assert interval.acquired == T0 + s(1)  # the time of its first fragment


def test_read_cri_log_joins_each_streams_fragments_and_skips_what_is_not_cri() -> None:
    lines = [
        cri(T0, "a", tag="P"),
        cri(T0 + s(1), "x", stream="stdout"),
        "garbage without a time\n",
        cri(T0 + s(2), "b", tag="P"),
        cri(T0 + s(3), "c"),
        cri(T0 + s(4), "tail", stream="stdout", tag="P"),
    ]
    out = [
        (line.time, line.stream, line.text, line.number) for line in leaderlogs.read_cri_log(lines)
    ]
    assert out == [
        (T0 + s(1), "stdout", "x", 2),
        (T0, "stderr", "abc", 1),
        (T0 + s(4), "stdout", "tail", 6),  # still partial at the end: as it is
    ]


def test_a_later_container_with_the_same_pod_uid_and_restart_count_is_its_own_instance(
    tmp_path: Path,
) -> None:
    """A parked and unparked static pod: same UID, restart count 0 again; the keeper
    archives the second container as 0.<id12>.log, and both count."""
    root = lab_root(tmp_path)
    pod = f"{KCM}-cp-1"
    first = write_instance(
        root,
        node="cp-1",
        pod=pod,
        lines=[acquired(T0 + s(1))],
        started=T0,
        finished=T0 + s(40),
        exit_code=0,
        reason="Completed",
        container_id="a" * 64,
    )
    write_instance(
        root,
        node="w-1",
        pod=f"{KCM}-x-1",
        lines=[acquired(T0 + s(20))],
        started=T0 + s(5),
        container_id="c" * 64,
    )
    second = write_instance(
        root,
        node="cp-1",
        pod=pod,
        lines=[acquired(T0 + s(90))],
        started=T0 + s(80),
        container_id="b" * 64,
    )
    assert (first.name, second.name) == ("0.log", f"0.{'b' * 12}.log")
    report = leaders.analyze(root, now=NOW)
    assert [(i.instance.name, i.instance.container_id[:1]) for i in report.intervals] == [
        (f"{pod}/cp-1/0", "a"),
        (f"{KCM}-x-1/w-1/0", "c"),
        (f"{pod}/cp-1/0.{'b' * 12}", "b"),
    ]
    assert [(o.first.instance.pod, o.second.instance.pod) for o in report.overlaps] == [
        (pod, f"{KCM}-x-1"),  # T0+20 .. T0+40
        (f"{KCM}-x-1", pod),  # T0+90 .. now
    ]


def test_messages_of_other_leases_and_the_migration_lock_do_not_count() -> None:
    assert (
        leaderlogs.classify('"Successfully acquired lease" lock="kube-system/other"', KCM_LEASE)
        is None
    )
    assert leaderlogs.classify('"migration leaderelection lost/stopped"', KCM_LEASE) is None
    assert (
        leaderlogs.classify('"Attempting to acquire leader lease..." lock="x/y"', KCM_LEASE) is None
    )
    assert leaderlogs.classify('"Failed to acquire lease" lock="kube-system/x"', KCM_LEASE) is None
    assert leaderlogs.classify(f'"Successfully acquired lease" lock="{KCM_LEASE}"', KCM_LEASE) == (
        leaderlogs.ACQUIRED,
        "Successfully acquired lease",
    )
    # client-go before the structured messages
    assert leaderlogs.classify(f"successfully acquired lease {KCM_LEASE}", KCM_LEASE) == (
        leaderlogs.ACQUIRED,
        f"successfully acquired lease {KCM_LEASE}",
    )
    old_renew = f"failed to renew lease {KCM_LEASE}: timed out waiting for the condition"
    assert leaderlogs.classify(old_renew, KCM_LEASE) == (leaderlogs.RENEW_FAILED, old_renew)
    assert leaderlogs.classify('"Leaderelection lost"', "kube-system/kube-scheduler") == (
        leaderlogs.LOST,
        "Leaderelection lost",
    )
    event = (
        f'"Event occurred" object="{KCM_LEASE}" fieldPath="" kind="Lease" '
        'apiVersion="coordination.k8s.io/v1" type="Normal" reason="LeaderElection" '
        'message="cp-1_0a1b stopped leading"'
    )
    assert leaderlogs.classify(event, KCM_LEASE) == (
        leaderlogs.STOPPED,
        "cp-1_0a1b stopped leading",
    )


def test_parse_klog_takes_the_message_after_the_header() -> None:
    line = leaderlogs.parse_klog(
        'I1125 07:00:00.123456    1234 leaderelection.go:272] "Successfully acquired lease" '
        'lock="kube-system/kube-controller-manager"\n'
    )
    assert line is not None
    assert (line.severity, line.source) == ("I", "leaderelection.go:272")
    assert line.message.startswith('"Successfully acquired lease" lock=')
    assert leaderlogs.parse_klog("Flag --foo has been deprecated") is None


def test_only_the_components_containers_count(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=76)
    write_instance(
        root,
        node="cp-1",
        pod=f"{SCHED}-cp-1",
        container=SCHED,
        lines=[acquired(T0 + s(2), "kube-system/kube-scheduler")],
        started=T0,
    )
    kcm = leaders.analyze(root, now=NOW)
    assert {i.container for i in kcm.instances} == {KCM}
    sched = leaders.analyze(root, SCHED, now=NOW)
    assert [i.instance.name for i in sched.intervals] == [f"{SCHED}-cp-1/cp-1/0"]
    assert sched.lease == "kube-system/kube-scheduler"


def test_cli_prints_the_timeline_and_exits_0_without_overlap(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=76)
    result = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{KCM}: lease {KCM_LEASE}, 2 lead interval(s) in 2 instance(s)")
    assert "INSTANCE (POD/NODE/RESTART)" in lines[1] and "ENDED BY" in lines[1]
    assert f"{KCM}-cp-1/cp-1/0" in lines[2] and "exited 137 (Error)" in lines[2]
    assert "2026-11-25 07:00:01.123" in lines[2]
    assert "still leading (running)" in lines[3]


def test_cli_exits_1_with_one_line_on_overlap(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=30)
    result = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root), "-o", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["overlaps"] == [
        {
            "kind": "two-leaders",
            "freeze": None,
            "first": f"{KCM}-cp-1/cp-1/0",
            "second": f"{KCM}-6f7d9c-abcde/w-1/0",
            "from": "2026-11-25T07:00:30.123456Z",
            "to": "2026-11-25T07:01:00.123456Z",
            "seconds": 30.0,
        }
    ]
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: {KCM}: two leaders at once (1 overlap(s) beyond 100 ms;")


def test_cli_refuses_an_unknown_component_and_a_missing_lab(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    bad = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root), "-c", "etcd"])
    assert bad.exit_code == 2 and "unknown component 'etcd'" in bad.stderr
    missing = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no lab at" in missing.stderr


# --- containers that left without a recorded end -------------------------------------------


def test_an_open_state_of_a_gone_container_ends_at_its_last_log_line(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), noise(T0 + s(42))],
        started=T0,
        live=False,  # the kubelet removed the container; the keeper never saw its end
    )
    report = leaders.analyze(root, now=NOW)
    (interval,) = report.intervals
    assert interval.until == T0 + s(42) and interval.ended_by == "exited"
    assert interval.describe_end() == "exited ? (Unknown), end estimated"
    (instance,) = report.instances
    assert instance.finished_at_estimated and instance.reason == "Unknown"
    assert report.warnings == (
        f"{KCM}-cp-1/cp-1/0: container gone without a recorded end; "
        "taken as ended at its last log line",
    )


def test_a_rotated_live_log_means_the_container_is_still_there(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    log = write_instance(
        root, node="cp-1", pod=f"{KCM}-cp-1", lines=[acquired(T0 + s(1))], started=T0, live=False
    )
    instance = instances.find_instances(root)[0]
    assert instance.live_log is not None and instance.container_gone
    rotated = instance.live_log.with_name(f"{instance.live_log.name}.20261125-070100")
    rotated.parent.mkdir(parents=True)
    rotated.write_text(log.read_text())
    (interval,) = leaders.analyze(root, now=NOW).intervals
    assert interval.until == NOW and interval.still_leading


def test_the_keepers_estimated_end_is_read_as_such(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    log = write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), noise(T0 + s(7))],
        started=T0,
        live=False,
    )
    assert logarchive.finish_unknown(log)
    assert not logarchive.finish_unknown(log)  # once only
    report = leaders.analyze(root, now=NOW)
    assert report.warnings == ()  # the end is recorded now
    (interval,) = report.intervals
    assert interval.until == T0 + s(7)
    assert interval.describe_end() == "exited ? (Unknown), end estimated"
