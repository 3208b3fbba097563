"""Never two leaders: lead intervals from synthetic lab logs and state files, their
overlaps, the klog time (zone, year) and `kubehoist lab leaders`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from kubehoist.cli import cli
from kubehoist.lab import leaders
from kubehoist.lab.kubelet import runtime

KCM = "kube-controller-manager"
SCHED = "kube-scheduler"
KCM_LEASE = "kube-system/kube-controller-manager"
T0 = datetime(2026, 11, 25, 7, 0, 0, 123456, tzinfo=UTC)


def klog(
    t: datetime,
    message: str,
    *,
    severity: str = "I",
    source: str = "leaderelection.go:272",
    tz: tzinfo = UTC,
) -> str:
    local = t.astimezone(tz)
    return f"{severity}{local:%m%d %H:%M:%S}.{local.microsecond:06d}    4242 {source}] {message}\n"


def acquired(t: datetime, lease: str = KCM_LEASE, tz: tzinfo = UTC) -> str:
    return klog(t, f'"Successfully acquired lease" lock="{lease}"', tz=tz)


def attempting(t: datetime, lease: str = KCM_LEASE) -> str:
    return klog(t, f'"Attempting to acquire leader lease..." lock="{lease}"', source="l.go:258")


def renew_failed(t: datetime, lease: str = KCM_LEASE) -> str:
    return klog(
        t,
        f'"Failed to renew lease" lock="{lease}" err="context deadline exceeded"',
        source="leaderelection.go:304",
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
    time_zone: str | None = None,
    state: bool = True,
) -> Path:
    uid = uid or f"uid-{pod}"
    directory = root / "nodes" / node / "var/log/pods" / f"kube-system_{pod}_{uid}" / container
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{restart}.log"
    log.write_text("".join(lines))
    if state:
        assert started is not None
        doc = {
            "containerID": f"lab://{pod}-{restart}",
            "startedAt": runtime.precise_timestamp(started),
            "finishedAt": runtime.precise_timestamp(finished) if finished else None,
            "exitCode": exit_code,
            "reason": reason,
            "node": node,
            "namespace": "kube-system",
            "pod": pod,
            "podUID": uid,
            "container": container,
            "restartCount": restart,
            "timeZone": time_zone,
        }
        runtime.write_json_atomic(runtime.state_path(log), doc)
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
    report = leaders.analyze(root, now=NOW, tz=UTC)
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
    report = leaders.analyze(root, now=NOW, tz=UTC)
    assert not report.ok
    (overlap,) = report.overlaps
    assert overlap.first.instance.pod == f"{KCM}-cp-1"
    assert overlap.second.instance.pod == f"{KCM}-6f7d9c-abcde"
    assert overlap.start == T0 + s(30) and overlap.end == T0 + s(60)
    assert overlap.seconds == pytest.approx(30.0)
    assert "both led for 30.000s" in overlap.describe()


def test_the_tolerance_decides_what_counts(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=55)  # 5 s of overlap
    assert leaders.analyze(root, now=NOW, tz=UTC).overlaps == ()
    (overlap,) = leaders.analyze(root, now=NOW, tz=UTC, tolerance=1.0).overlaps
    assert overlap.seconds == pytest.approx(5.0)


def test_a_leader_that_failed_to_renew_no_longer_leads_although_it_still_runs(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(T0 + s(1)), renew_failed(T0 + s(20)), lost(T0 + s(20.2))],
        started=T0,
    )
    write_instance(
        root, node="w-1", pod=f"{KCM}-x-1", lines=[acquired(T0 + s(26))], started=T0 + s(3)
    )
    report = leaders.analyze(root, now=NOW, tz=UTC)
    assert report.ok
    old = report.intervals[0]
    assert old.until == T0 + s(20) and old.ended_by == leaders.RENEW_FAILED
    assert old.describe_end() == '"Failed to renew lease"'


def test_leaderelection_lost_alone_ends_the_interval_too(tmp_path: Path) -> None:
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
    (interval,) = leaders.analyze(root, now=NOW, tz=UTC).intervals
    assert interval.until == T0 + s(9) and interval.ended_by == leaders.LOST


def test_without_finished_at_the_instance_leads_until_now(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    handover(root, new_acquires_at=76, old_finished=None)
    report = leaders.analyze(root, now=NOW, tz=UTC)
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
    report = leaders.analyze(root, now=NOW, tz=UTC)
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
    report = leaders.analyze(root, now=NOW, tz=UTC)
    assert [i.instance.name for i in report.intervals] == [f"{pod}/cp-1/0", f"{pod}/cp-1/1"]
    assert report.ok


def test_the_year_comes_from_the_state_file_across_new_year(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    started = datetime(2025, 12, 31, 23, 59, 50, tzinfo=UTC)
    when = datetime(2026, 1, 1, 0, 0, 5, 250000, tzinfo=UTC)
    write_instance(root, node="cp-1", pod=f"{KCM}-cp-1", lines=[acquired(when)], started=started)
    (interval,) = leaders.analyze(root, now=when + s(60), tz=UTC).intervals
    assert interval.acquired == when


def test_lines_of_an_earlier_run_appended_to_the_same_log_are_skipped(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    earlier = T0 - timedelta(days=2)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(earlier), noise(earlier + s(1)), acquired(T0 + s(17))],
        started=T0,
    )
    (interval,) = leaders.analyze(root, now=NOW, tz=UTC).intervals
    assert interval.acquired == T0 + s(17)


def test_klog_local_time_is_read_in_the_containers_zone(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    berlin = ZoneInfo("Europe/Berlin")
    when = T0 + s(1)
    write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        lines=[acquired(when, tz=berlin)],
        started=T0,
        time_zone="Europe/Berlin",
    )
    (interval,) = leaders.analyze(root, now=NOW).intervals
    assert interval.acquired == when


def test_without_tz_the_hosts_localtime_is_the_zone(tmp_path: Path) -> None:
    localtime = Path("/usr/share/zoneinfo/America/New_York")
    zone = leaders.host_time_zone(localtime)
    assert zone.utcoffset(T0) == timedelta(hours=-5)
    assert leaders.host_time_zone(tmp_path / "missing") is UTC
    assert leaders.zone_for(None, zone) is zone
    assert leaders.zone_for("", zone) is UTC
    assert leaders.zone_for(":Europe/Berlin", zone).utcoffset(T0) == timedelta(hours=1)
    assert leaders.zone_for("No/Such_Zone", zone) is UTC


def test_messages_of_other_leases_and_the_migration_lock_do_not_count() -> None:
    assert (
        leaders.classify('"Successfully acquired lease" lock="kube-system/other"', KCM_LEASE)
        is None
    )
    assert leaders.classify('"migration leaderelection lost/stopped"', KCM_LEASE) is None
    assert leaders.classify('"Attempting to acquire leader lease..." lock="x/y"', KCM_LEASE) is None
    assert leaders.classify('"Failed to acquire lease" lock="kube-system/x"', KCM_LEASE) is None
    assert leaders.classify(f'"Successfully acquired lease" lock="{KCM_LEASE}"', KCM_LEASE) == (
        leaders.ACQUIRED,
        "Successfully acquired lease",
    )
    # client-go before the structured messages
    assert leaders.classify(f"successfully acquired lease {KCM_LEASE}", KCM_LEASE) == (
        leaders.ACQUIRED,
        f"successfully acquired lease {KCM_LEASE}",
    )
    old_renew = f"failed to renew lease {KCM_LEASE}: timed out waiting for the condition"
    assert leaders.classify(old_renew, KCM_LEASE) == (leaders.RENEW_FAILED, old_renew)
    assert leaders.classify('"Leaderelection lost"', "kube-system/kube-scheduler") == (
        leaders.LOST,
        "Leaderelection lost",
    )
    event = (
        f'"Event occurred" object="{KCM_LEASE}" fieldPath="" kind="Lease" '
        'apiVersion="coordination.k8s.io/v1" type="Normal" reason="LeaderElection" '
        'message="cp-1_0a1b stopped leading"'
    )
    assert leaders.classify(event, KCM_LEASE) == (leaders.STOPPED, "cp-1_0a1b stopped leading")


def test_parse_klog_reads_the_header() -> None:
    line = leaders.parse_klog(
        'I1125 07:00:00.123456    1234 leaderelection.go:272] "Successfully acquired lease" '
        'lock="kube-system/kube-controller-manager"\n'
    )
    assert line is not None
    assert (line.month, line.day, line.hour, line.microsecond) == (11, 25, 7, 123456)
    assert line.source == "leaderelection.go:272"
    assert leaders.parse_klog("Flag --foo has been deprecated") is None


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
    kcm = leaders.analyze(root, now=NOW, tz=UTC)
    assert {i.container for i in kcm.instances} == {KCM}
    sched = leaders.analyze(root, SCHED, now=NOW, tz=UTC)
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
            "first": f"{KCM}-cp-1/cp-1/0",
            "second": f"{KCM}-6f7d9c-abcde/w-1/0",
            "from": "2026-11-25T07:00:30.123456Z",
            "to": "2026-11-25T07:01:00.123456Z",
            "seconds": 30.0,
        }
    ]
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: {KCM}: two leaders at once (1 overlap(s) beyond 10s;")


def test_cli_refuses_an_unknown_component_and_a_missing_lab(tmp_path: Path) -> None:
    root = lab_root(tmp_path)
    bad = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(root), "-c", "etcd"])
    assert bad.exit_code == 2 and "unknown component 'etcd'" in bad.stderr
    missing = CliRunner().invoke(cli, ["lab", "leaders", "--root", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no lab at" in missing.stderr


# --- the kubelet's side: state files ---------------------------------------------------------


def test_state_files_are_written_at_start_and_end(tmp_path: Path) -> None:
    log = tmp_path / "kube-system_p_u" / KCM / "0.log"
    log.parent.mkdir(parents=True)
    assert runtime.state_path(log) == log.parent / "0.state.json"
    assert leaders.STATE_SUFFIX == runtime.STATE_SUFFIX
    proc = runtime.ContainerProcess(
        container_id="lab://abc",
        process=cast(Any, None),
        state_dir=tmp_path / "state",
        log=log,
        started_at=T0,
        identity={"node": "cp-1", "pod": "p", "restartCount": 0, "timeZone": None},
    )
    proc.record()
    doc = json.loads(runtime.state_path(log).read_text())
    assert set(doc) == set(runtime.STATE_FIELDS)
    assert doc["startedAt"] == "2026-11-25T07:00:00.123456Z"
    assert doc["finishedAt"] is None and doc["exitCode"] is None and doc["reason"] is None
    proc.record_end(137, "Error", T0 + s(5))
    proc.record_end(0, "Completed", T0 + s(9))  # the first account stays
    doc = json.loads(runtime.state_path(log).read_text())
    assert doc["finishedAt"] == "2026-11-25T07:00:05.123456Z"
    assert (doc["exitCode"], doc["reason"], doc["pod"]) == (137, "Error", "p")
    assert [p.name for p in log.parent.iterdir()] == ["0.state.json"]  # no temporary left


def test_state_files_a_dead_kubelet_left_open_are_closed_at_the_logs_last_write(
    tmp_path: Path,
) -> None:
    root = lab_root(tmp_path)
    log = write_instance(
        root, node="cp-1", pod=f"{KCM}-cp-1", lines=[acquired(T0 + s(1))], started=T0
    )
    done = write_instance(
        root,
        node="cp-1",
        pod=f"{KCM}-cp-1",
        restart=1,
        lines=[],
        started=T0,
        finished=T0 + s(3),
        exit_code=0,
        reason="Completed",
    )
    mtime = (T0 + s(42)).timestamp()
    os.utime(log, (mtime, mtime))
    node_root = root / "nodes" / "cp-1"
    assert runtime.close_stale_states(node_root) == [runtime.state_path(log)]
    doc = json.loads(runtime.state_path(log).read_text())
    assert doc["finishedAt"] == "2026-11-25T07:00:42.123456Z"
    assert (doc["reason"], doc["exitCode"], doc["finishedAtEstimated"]) == ("Unknown", None, True)
    assert json.loads(runtime.state_path(done).read_text())["reason"] == "Completed"
    assert runtime.close_stale_states(node_root) == []
    (interval,) = leaders.analyze(root, now=NOW, tz=UTC).intervals
    assert interval.describe_end() == "exited ? (Unknown), end estimated"
