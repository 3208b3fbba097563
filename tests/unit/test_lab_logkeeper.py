"""The log keeper: crictl's output (recorded samples as templates), archiving logs
through rotation and deletion, state files from start to end, and a restarted keeper
resuming where the last one stopped."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kubehoist.errors import KubehoistError
from kubehoist.lab import instances, logarchive, logkeeper
from kubehoist.lab.logarchive import CREATED, EXITED, RUNNING
from kubehoist.lab.logkeeper import LogKeeper

SAMPLES = Path(__file__).parent / "crictl"
T0 = datetime(2026, 12, 1, 17, 37, 9, 123456, tzinfo=UTC)
KCM = "kube-controller-manager"
POD = f"{KCM}-cp-1"
UID = "0c1d2e3f4a5b"
POD_DIR = f"kube-system_{POD}_{UID}"
ZERO = "0001-01-01T00:00:00Z"


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def rfc3339(t: datetime) -> str:
    """As Go formats it: nanoseconds, trailing zeros trimmed."""
    frac = f"{t.microsecond:06d}000".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def cri(t: datetime, text: str, tag: str = "F") -> bytes:
    return f"{rfc3339(t)} stderr {tag} {text}\n".encode()


@dataclass
class Box:
    """A fake container: what crictl says about it."""

    id: str
    name: str
    restart: int
    state: str
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int = 0
    reason: str = ""
    kubelets: bool = True

    @property
    def log_path(self) -> str:
        return f"/var/log/pods/{POD_DIR}/{self.name}/{self.restart}.log"


class FakeCri:
    """A `Crictl` answering from the recorded samples, with the boxes' values."""

    def __init__(self, node_root: Path) -> None:
        self.node_root = node_root
        self.boxes: dict[str, Box] = {}
        self.calls: list[list[str]] = []
        self.down = False

    def add(self, box: Box) -> Box:
        self.boxes[box.id] = box
        self.live(box).parent.mkdir(parents=True, exist_ok=True)
        self.live(box).touch()
        return box

    def live(self, box: Box) -> Path:
        return self.node_root / box.log_path.lstrip("/")

    def write(self, box: Box, *lines: bytes) -> None:
        with open(self.live(box), "ab") as fh:
            fh.write(b"".join(lines))

    def remove(self, box: Box) -> None:
        """As the kubelet removes a container: gone from CRI, its log deleted."""
        del self.boxes[box.id]
        self.live(box).unlink()

    def inspects(self) -> list[list[str]]:
        return [c[4:] for c in self.calls if c[0] == "inspect"]

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        if self.down:
            raise KubehoistError("crictl ps on cp-1: connection refused")
        if args[0] == "ps":
            assert list(args) == ["ps", "-a", "-o", "json"]
            return json.dumps({"containers": [self._ps(b) for b in self.boxes.values()]})
        assert list(args[:4]) == ["inspect", "-q", "-o", "json"], args
        ids = args[4:]
        missing = [i for i in ids if i not in self.boxes]
        if missing:
            raise KubehoistError(f"crictl inspect on cp-1: {missing[0]} not found")
        items = [{"status": self._status(self.boxes[i])} for i in ids]
        return json.dumps(items[0] if len(items) == 1 else items)

    def _labels(self, box: Box) -> tuple[dict[str, str], dict[str, str]]:
        if not box.kubelets:
            return {}, {}
        labels = {
            "io.kubernetes.container.name": box.name,
            "io.kubernetes.pod.name": POD,
            "io.kubernetes.pod.namespace": "kube-system",
            "io.kubernetes.pod.uid": UID,
        }
        return labels, {"io.kubernetes.container.restartCount": str(box.restart)}

    def _ps(self, box: Box) -> dict[str, Any]:
        item = copy.deepcopy(sample("ps.json")["containers"][1])
        item.update(id=box.id, state=box.state)
        item["metadata"] = {"name": box.name, "attempt": box.restart}
        item["labels"], item["annotations"] = self._labels(box)
        return dict(item)

    def _status(self, box: Box) -> dict[str, Any]:
        status = copy.deepcopy(sample("inspect-running.json")["status"])
        status.update(
            id=box.id,
            state=box.state,
            metadata={"name": box.name, "attempt": box.restart},
            logPath=box.log_path,
            startedAt=rfc3339(box.started) if box.started else ZERO,
            finishedAt=rfc3339(box.finished) if box.finished else ZERO,
            exitCode=box.exit_code,
            reason=box.reason,
        )
        status["labels"], status["annotations"] = self._labels(box)
        return dict(status)


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path / "lab" / "nodes" / "cp-1"


def archive(node_root: Path, name: str = KCM, file: str = "0.log") -> Path:
    return node_root / logarchive.ARCHIVE_DIR / POD_DIR / name / file


def state(log: Path) -> dict[str, Any]:
    doc = json.loads(logarchive.state_path(log).read_text())
    assert isinstance(doc, dict)
    return doc


def running(cid: str = "a" * 64, restart: int = 0, name: str = KCM) -> Box:
    return Box(cid, name, restart, RUNNING, started=T0)


def exit_box(box: Box, at: datetime, code: int = 137, reason: str = "Error") -> None:
    box.state, box.finished, box.exit_code, box.reason = EXITED, at, code, reason


# --- crictl's output ----------------------------------------------------------------------


def test_the_recorded_samples_parse() -> None:
    listed = logarchive.parse_ps((SAMPLES / "ps.json").read_text())
    assert sorted(listed.values()) == [EXITED, RUNNING]
    running_ = logarchive.parse_inspect((SAMPLES / "inspect-running.json").read_text())
    ((cid, rec),) = running_.items()
    assert rec is not None and rec.container_id == cid
    assert (rec.namespace, rec.pod, rec.pod_uid, rec.container, rec.restart_count) == (
        "kube-system",
        POD,
        UID,
        KCM,
        0,
    )
    assert rec.log_path == f"/var/log/pods/{POD_DIR}/{KCM}/0.log"
    assert rec.started_at == datetime(2026, 12, 1, 17, 47, 35, 241925, tzinfo=UTC)
    assert (rec.finished_at, rec.exit_code, rec.reason) == (None, None, "")
    (exited,) = logarchive.parse_inspect((SAMPLES / "inspect-exited.json").read_text()).values()
    assert exited is not None and exited.state == EXITED
    assert exited.finished_at == datetime(2026, 12, 1, 17, 48, 6, 251779, tzinfo=UTC)
    assert (exited.exit_code, exited.reason) == (3, "Error")
    (created,) = logarchive.parse_inspect((SAMPLES / "inspect-created.json").read_text()).values()
    assert created is not None and created.started_at is None and created.finished_at is None
    two = logarchive.parse_inspect((SAMPLES / "inspect-two.json").read_text())
    assert len(two) == 2
    assert [r is None for r in two.values()] == [False, True]  # the second is not the kubelet's


def test_rfc3339_in_any_zone_and_precision() -> None:
    want = datetime(2026, 12, 1, 17, 37, 9, 123456, tzinfo=UTC)
    assert logarchive.parse_rfc3339("2026-12-01T17:37:09.123456789Z") == want
    assert logarchive.parse_rfc3339("2026-12-01T18:37:09.1234567+01:00") == want
    assert logarchive.parse_rfc3339("2026-12-01T17:37:09Z") == want.replace(microsecond=0)
    assert logarchive.parse_rfc3339("2026-12-01T17:37:09.5Z").microsecond == 500000
    with pytest.raises(ValueError):
        logarchive.parse_rfc3339("2026-12-01 17:37:09Z")


def test_cri_lines() -> None:
    line = logarchive.parse_cri_line("2026-12-01T17:37:09.12345Z stdout P a b  c\n")
    assert line == logarchive.CriLine(
        datetime(2026, 12, 1, 17, 37, 9, 123450, tzinfo=UTC), "stdout", True, "a b  c"
    )
    empty = logarchive.parse_cri_line("2026-12-01T17:37:09Z stderr F")
    assert empty is not None and empty.content == "" and not empty.partial
    assert logarchive.parse_cri_line("I1201 17:37:09.123456 1 x.go:1] hello") is None
    assert logarchive.parse_cri_line("2026-12-01T17:37:09Z stdin F x") is None
    assert logarchive.parse_cri_line("2026-12-01T17:37:09Z stdout X x") is None


# --- following containers -------------------------------------------------------------------


def test_a_container_from_start_to_exit(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    cri_.write(box, cri(T0, "hello"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    first = keeper.sweep_once()
    assert first == logkeeper.Sweep(
        listed=1, inspected=1, copied=len(cri(T0, "hello")), states=1, gone=0
    )
    log = archive(node_root)
    assert log.read_bytes() == cri(T0, "hello")
    doc = state(log)
    assert set(doc) == set(logarchive.STATE_FIELDS)
    assert doc["containerID"] == box.id and doc["node"] == "cp-1"
    assert doc["startedAt"] == "2026-12-01T17:37:09.123456Z"
    assert doc["finishedAt"] is None and doc["exitCode"] is None and doc["reason"] is None
    assert (doc["pod"], doc["podUID"], doc["container"], doc["restartCount"]) == (POD, UID, KCM, 0)

    cri_.write(box, cri(T0 + s(1), "more"), cri(T0 + s(2), "and more"))
    second = keeper.sweep_once()
    assert (second.inspected, second.states) == (0, 0)  # no change: ps only
    assert log.read_bytes() == cri_.live(box).read_bytes()
    assert len(cri_.inspects()) == 1

    cri_.write(box, cri(T0 + s(3), "bye"))
    exit_box(box, T0 + s(3.5), 3)
    third = keeper.sweep_once()
    assert (third.inspected, third.states) == (1, 1)
    doc = state(log)
    assert doc["finishedAt"] == "2026-12-01T17:37:12.623456Z"
    assert (doc["exitCode"], doc["reason"], doc["finishedAtEstimated"]) == (3, "Error", False)
    assert log.read_bytes() == cri_.live(box).read_bytes()
    keeper.sweep_once()
    assert keeper.sweep_once().inspected == 0
    assert [p.name for p in log.parent.iterdir()] == ["0.log", "0.state.json"]  # no temporary


def open_fds_on(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path))


def test_bytes_flushed_after_the_exit_are_copied_then_the_log_is_let_go(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    assert open_fds_on(cri_.live(box)) == 1
    exit_box(box, T0 + s(1))
    keeper.sweep_once()
    cri_.write(box, cri(T0 + s(1), "flushed late"))
    keeper.sweep_once()
    assert archive(node_root).read_bytes() == cri(T0 + s(1), "flushed late")
    assert open_fds_on(cri_.live(box)) == 0


def test_a_created_container_waits_for_its_start(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(Box("c" * 64, KCM, 0, CREATED))
    keeper = LogKeeper("cp-1", node_root, cri_)
    assert keeper.sweep_once().inspected == 0
    assert not archive(node_root).exists()
    box.state, box.started = RUNNING, T0
    assert keeper.sweep_once().states == 1
    assert state(archive(node_root))["startedAt"] is not None


def test_a_container_removed_while_running_keeps_its_last_bytes_and_ends_unknown(
    node_root: Path,
) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    cri_.write(box, cri(T0, "one"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    cri_.write(box, cri(T0 + s(1), "two"), cri(T0 + s(41), "last words"))
    cri_.remove(box)  # the kubelet deletes the log: the keeper's descriptor still reads it
    sweep = keeper.sweep_once()
    assert (sweep.gone, sweep.states) == (1, 1)
    log = archive(node_root)
    assert log.read_bytes() == cri(T0, "one") + cri(T0 + s(1), "two") + cri(
        T0 + s(41), "last words"
    )
    doc = state(log)
    assert doc["finishedAt"] == "2026-12-01T17:37:50.123456Z"
    assert (doc["reason"], doc["exitCode"], doc["finishedAtEstimated"]) == ("Unknown", None, True)
    assert json.loads(keeper.checkpoint_path.read_text())["containers"] == {}


def test_a_rotated_log_is_followed_without_losing_the_old_files_tail(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    live = cri_.live(box)
    cri_.write(box, cri(T0, "a"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    # The kubelet renames the log; containerd writes on into the old file until it
    # reopens the path, then into a new file.
    rotated = live.with_name("0.log.20261201-173710")
    live.rename(rotated)
    with open(rotated, "ab") as fh:
        fh.write(cri(T0 + s(1), "b"))
    cri_.write(box, cri(T0 + s(2), "c"))
    keeper.sweep_once()
    cri_.write(box, cri(T0 + s(3), "d"))
    keeper.sweep_once()
    want = b"".join(cri(T0 + s(i), x) for i, x in enumerate("abcd"))
    assert archive(node_root).read_bytes() == want


def test_a_log_truncated_in_place_is_copied_anew(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    cri_.write(box, cri(T0, "long line before"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    cri_.live(box).write_bytes(cri(T0 + s(1), "x"))
    keeper.sweep_once()
    assert archive(node_root).read_bytes() == cri(T0, "long line before") + cri(T0 + s(1), "x")


def test_a_second_container_for_a_taken_archive_file_gets_its_own(node_root: Path) -> None:
    """A static pod whose manifest was parked and put back: same UID, restart 0."""
    cri_ = FakeCri(node_root)
    old = cri_.add(running("a" * 64))
    cri_.write(old, cri(T0, "old"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    exit_box(old, T0 + s(5), 0, "Completed")
    keeper.sweep_once()
    cri_.remove(old)
    keeper.sweep_once()
    new = cri_.add(Box("b" * 64, KCM, 0, RUNNING, started=T0 + s(30)))
    cri_.write(new, cri(T0 + s(31), "new"))
    keeper.sweep_once()
    first, second = archive(node_root), archive(node_root, file=f"0.{'b' * 12}.log")
    assert first.read_bytes() == cri(T0, "old")
    assert second.read_bytes() == cri(T0 + s(31), "new")
    assert state(first)["reason"] == "Completed"
    assert state(second)["containerID"] == "b" * 64
    names = [i.name for i in instances.find_instances(node_root.parent.parent)]
    assert names == [f"{POD}/cp-1/0", f"{POD}/cp-1/0.{'b' * 12}"]


def test_containers_the_kubelet_did_not_create_are_inspected_once(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    cri_.add(Box("d" * 64, "plain", 0, RUNNING, started=T0, kubelets=False))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    keeper.sweep_once()
    assert cri_.inspects() == [["d" * 64]]
    assert not (node_root / logarchive.ARCHIVE_DIR).joinpath(POD_DIR).exists()


def test_changed_containers_are_inspected_in_one_call_else_one_by_one(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    a = cri_.add(running("a" * 64, name="a"))
    b = cri_.add(running("b" * 64, name="b"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    assert cri_.inspects() == [["a" * 64, "b" * 64]]
    cri_.calls.clear()
    exit_box(a, T0 + s(1))
    exit_box(b, T0 + s(2))
    real = cri_.__call__

    def b_vanishes_after_ps(args: Sequence[str]) -> str:
        out = real(args)
        if args[0] == "ps" and b.id in cri_.boxes:
            cri_.remove(b)
        return out

    keeper._crictl = b_vanishes_after_ps
    keeper.sweep_once()
    assert cri_.inspects() == [["a" * 64, "b" * 64], ["a" * 64], ["b" * 64]]
    assert state(archive(node_root, "a"))["exitCode"] == 137
    keeper.sweep_once()
    assert state(archive(node_root, "b"))["reason"] == "Unknown"


# --- restarts and the end -------------------------------------------------------------------


def test_a_restarted_keeper_resumes_from_its_checkpoint(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    gone = cri_.add(running("e" * 64, name="gone"))
    cri_.write(box, cri(T0, "a"))
    cri_.write(gone, cri(T0 + s(4), "bye"))
    first = LogKeeper("cp-1", node_root, cri_)
    first.sweep_once()
    first.close()
    cri_.write(box, cri(T0 + s(1), "b"))
    cri_.remove(gone)  # while no keeper ran
    second = LogKeeper("cp-1", node_root, cri_)
    sweep = second.sweep_once()
    assert sweep.gone == 1
    assert archive(node_root).read_bytes() == cri(T0, "a") + cri(T0 + s(1), "b")
    doc = state(archive(node_root, "gone"))
    assert (doc["reason"], doc["finishedAt"]) == ("Unknown", "2026-12-01T17:37:13.123456Z")


def test_without_a_checkpoint_a_keeper_continues_its_own_archive_file(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    cri_.write(box, cri(T0, "a"))
    LogKeeper("cp-1", node_root, cri_).sweep_once()
    (node_root / logarchive.ARCHIVE_DIR / logkeeper.CHECKPOINT_NAME).unlink()
    cri_.write(box, cri(T0 + s(1), "b"))
    LogKeeper("cp-1", node_root, cri_).sweep_once()
    assert archive(node_root).read_bytes() == cri(T0, "a") + cri(T0 + s(1), "b")
    assert sorted(p.name for p in archive(node_root).parent.iterdir()) == ["0.log", "0.state.json"]


def test_the_final_sweep_finishes_every_open_state(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    done = cri_.add(running("f" * 64, name="done"))
    cri_.write(box, cri(T0 + s(2), "x"))
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    exit_box(done, T0 + s(3), 0, "Completed")
    cri_.write(box, cri(T0 + s(9), "y"))
    keeper.sweep_once(final=True)
    assert archive(node_root).read_bytes() == cri(T0 + s(2), "x") + cri(T0 + s(9), "y")
    doc = state(archive(node_root))
    assert (doc["reason"], doc["finishedAt"], doc["finishedAtEstimated"]) == (
        "Unknown",
        "2026-12-01T17:37:18.123456Z",
        True,
    )
    assert state(archive(node_root, "done"))["reason"] == "Completed"


def test_the_final_sweep_without_containerd_counts_everything_gone(node_root: Path) -> None:
    cri_ = FakeCri(node_root)
    cri_.add(running())
    keeper = LogKeeper("cp-1", node_root, cri_)
    keeper.sweep_once()
    cri_.down = True
    with pytest.raises(KubehoistError, match="connection refused"):
        keeper.sweep_once()
    assert keeper.sweep_once(final=True).states == 1
    assert state(archive(node_root))["reason"] == "Unknown"


def test_run_sweeps_until_stopped_and_survives_a_failing_crictl(
    node_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cri_ = FakeCri(node_root)
    box = cri_.add(running())
    cri_.write(box, cri(T0, "a"))
    cri_.down = True
    keeper = LogKeeper("cp-1", node_root, cri_)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(keeper.run(stop, interval=0.01))
        while len(cri_.calls) < 3:
            await asyncio.sleep(0.01)
        cri_.down = False
        while not archive(node_root).exists() or not archive(node_root).read_bytes():
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    with caplog.at_level(logging.WARNING, logger="kubehoist.lab.logkeeper"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["log keeper cp-1: crictl ps on cp-1: connection refused"]  # once
    assert archive(node_root).read_bytes() == cri(T0, "a")
