"""Termination messages: the container fields, the file mounted at
terminationMessagePath, what is read back when a container ends (the file, or the
log's tail for FallbackToLogsOnError) and how it lands in the pod's status."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubehoist.lab.kubelet import images, runtime
from kubehoist.lab.kubelet.launcher import Mount
from kubehoist.lab.kubelet.podspec import Container, PodSpecError, parse_pod
from kubehoist.lab.kubelet.status import (
    MAX_CONTAINER_MESSAGE_BYTES,
    MAX_LOG_MESSAGE_BYTES,
    MAX_POD_MESSAGE_BYTES,
    ContainerSnapshot,
    PodSnapshot,
    State,
    build_status,
    falls_back_to_logs,
    file_message,
    join_message,
    log_message,
)
from kubehoist.lab.kubelet.worker import termination_message

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def container(**fields: Any) -> Container:
    pod = parse_pod(
        {
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **fields}]},
        }
    )
    return pod.containers[0]


# --- the fields -----------------------------------------------------------------------


def test_fields_default_as_the_api_server_defaults_them() -> None:
    c = container()
    assert c.termination_message_path == "/dev/termination-log"
    assert c.termination_message_policy == "File"
    # an empty path is defaulted too (static pods are defaulted by the kubelet)
    assert container(terminationMessagePath="").termination_message_path == "/dev/termination-log"


def test_fields_are_read() -> None:
    c = container(
        terminationMessagePath="/tmp/msg", terminationMessagePolicy="FallbackToLogsOnError"
    )
    assert (c.termination_message_path, c.termination_message_policy) == (
        "/tmp/msg",
        "FallbackToLogsOnError",
    )


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(PodSpecError, match="terminationMessagePolicy 'Logs'"):
        container(terminationMessagePolicy="Logs")


# --- the file in the container --------------------------------------------------------


def test_the_file_is_mounted_read_write_after_the_volumes() -> None:
    state_dir = Path("/lab/n/var/lib/kubelet/pods/u1/containers/c/0")
    volume = Mount("/lab/n/etc/kubernetes/pki", "/etc/kubernetes/pki", True)
    spec = runtime.launch_spec(
        container=container(),
        image=images.Image(name="busybox", program="busybox"),
        env={},
        hostname="p",
        pod_ip="10.244.1.2",
        netns="",
        mounts=(volume,),
        state_dir=state_dir,
    )
    assert spec.mounts == (
        volume,
        Mount(f"{state_dir}/termination-log", "/dev/termination-log", read_only=False),
    )
    assert runtime.termination_mount(container(terminationMessagePath="/m"), state_dir) == (
        Mount(f"{state_dir}/termination-log", "/m", read_only=False),
    )


# --- reading it back ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "exit_code", "reason", "expected"),
    [
        ("File", 1, "Error", False),
        ("FallbackToLogsOnError", 0, "Completed", False),
        ("FallbackToLogsOnError", 2, "Error", True),
        ("FallbackToLogsOnError", 137, "Error", True),
        ("FallbackToLogsOnError", 128, "StartError", False),  # it never ran
    ],
)
def test_when_the_log_may_stand_in(
    policy: str, exit_code: int, reason: str, expected: bool
) -> None:
    assert falls_back_to_logs(policy, exit_code, reason) is expected


def test_file_message() -> None:
    assert file_message(b"done\n", fallback=True) == ("done\n", False)
    assert file_message(b"", fallback=False) == ("", False)
    assert file_message(b"", fallback=True) == ("", True)
    assert file_message(None, fallback=True) == ("", True)
    assert file_message(None, error="Error on reading", fallback=True) == (
        "Error on reading",
        False,
    )
    big = b"a" * 10 + b"b" * MAX_CONTAINER_MESSAGE_BYTES
    assert file_message(big, fallback=False) == ("b" * MAX_CONTAINER_MESSAGE_BYTES, False)
    assert file_message(b"\xff ok", fallback=False) == ("\ufffd ok", False)


def test_log_message_is_the_last_lines_cut_to_the_last_bytes() -> None:
    lines = b"".join(f"line {i}\n".encode() for i in range(100))
    assert log_message(lines) == "".join(f"line {i}\n" for i in range(20, 100))
    assert log_message(b"one\ntwo") == "one\ntwo"
    long = b"x" * 5000 + b"\nend\n"
    assert log_message(long) == "x" * (MAX_LOG_MESSAGE_BYTES - 5) + "\nend\n"
    assert log_message(b"") == ""


def test_join_message() -> None:
    assert join_message("", "") == ""
    assert join_message("exec 'nope': No such file", "") == "exec 'nope': No such file"
    assert join_message("", "parked abc") == "parked abc"
    assert join_message("start", "msg") == "start: msg"


def test_runtime_reads_the_tails(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert runtime.read_termination_file(missing) == (None, "")
    f = tmp_path / "termination-log"
    f.write_bytes(b"x" * 100 + b"y" * MAX_CONTAINER_MESSAGE_BYTES)
    assert runtime.read_termination_file(f) == (b"y" * MAX_CONTAINER_MESSAGE_BYTES, "")
    data, error = runtime.read_termination_file(tmp_path)  # a directory
    assert data is None and error.startswith(f"Error on reading termination log {tmp_path}: ")
    log = tmp_path / "0.log"
    log.write_bytes(b"z" * 5000)
    assert runtime.read_log_tail(log) == (b"z" * (MAX_LOG_MESSAGE_BYTES + 1), "")
    tail, error = runtime.read_log_tail(missing)
    assert tail == b"" and error.startswith("Error on reading termination message from logs: ")


@pytest.mark.parametrize(
    ("fields", "file", "log", "exit_code", "reason", "expected"),
    [
        ({}, b"parked 12ab\n", b"noise\n", 0, "Completed", "parked 12ab\n"),
        ({}, b"removed\n", b"noise\n", 3, "Error", "removed\n"),
        ({}, b"", b"noise\n", 3, "Error", ""),
        ({}, None, b"noise\n", 3, "Error", ""),
        (
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            b"",
            b"starting\nboom: no such file\n",
            1,
            "Error",
            "starting\nboom: no such file\n",
        ),
        (
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            None,
            b"boom\n",
            1,
            "Error",
            "boom\n",
        ),
        (
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            b"mine",
            b"boom\n",
            1,
            "Error",
            "mine",
        ),
        ({"terminationMessagePolicy": "FallbackToLogsOnError"}, b"", b"fine\n", 0, "Completed", ""),
        (
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            b"",
            b"l: x\n",
            128,
            "StartError",
            "",
        ),
    ],
)
def test_termination_message(
    tmp_path: Path,
    fields: dict[str, Any],
    file: bytes | None,
    log: bytes,
    exit_code: int,
    reason: str,
    expected: str,
) -> None:
    message_file = tmp_path / "termination-log"
    if file is not None:
        message_file.write_bytes(file)
    log_file = tmp_path / "0.log"
    log_file.write_bytes(log)
    got = termination_message(container(**fields), message_file, log_file, exit_code, reason)
    assert got == expected


# --- in the status --------------------------------------------------------------------


def snapshot(name: str, state: State, last: State | None = None) -> ContainerSnapshot:
    return ContainerSnapshot(
        name=name,
        image="busybox",
        image_id="lab://busybox",
        container_id="lab://1",
        state=state,
        last_state=last,
        ready=False,
        started=False,
        restart_count=0 if last is None else 1,
    )


def pod(*containers: ContainerSnapshot, init: tuple[ContainerSnapshot, ...] = ()) -> PodSnapshot:
    return PodSnapshot(
        restart_policy="Never",
        pod_ip="10.244.1.2",
        host_ip="172.29.0.12",
        start_time=T0,
        sandbox_ready=True,
        init_containers=init,
        containers=containers,
    )


def test_message_is_in_state_and_last_state() -> None:
    first = State("terminated", "Error", "removed\n", exit_code=1, finished_at=T0)
    waiting = State("waiting", "CrashLoopBackOff", "back-off 10s")
    body = build_status(pod(snapshot("c", waiting, last=first)), {})
    (status,) = body["containerStatuses"]
    assert status["lastState"]["terminated"]["message"] == "removed\n"
    done = State("terminated", "Completed", "parked ab\n", exit_code=0)
    body = build_status(pod(snapshot("c", done)), {})
    assert body["containerStatuses"][0]["state"]["terminated"]["message"] == "parked ab\n"
    quiet = State("terminated", "Completed", exit_code=0)
    body = build_status(pod(snapshot("c", quiet)), {})
    assert "message" not in body["containerStatuses"][0]["state"]["terminated"]


def test_messages_share_the_pods_budget() -> None:
    long = State("terminated", "Error", "m" * MAX_CONTAINER_MESSAGE_BYTES, exit_code=1)
    # three containers: 4 KiB each fits the 12 KiB of a pod
    body = build_status(pod(*(snapshot(n, long) for n in "abc")), {})
    assert all(
        len(s["state"]["terminated"]["message"]) == MAX_CONTAINER_MESSAGE_BYTES
        for s in body["containerStatuses"]
    )
    # three containers and an init container: 3 KiB each, first bytes kept
    marked = State("terminated", "Error", "s" + "m" * 5000, exit_code=1)
    body = build_status(
        pod(
            snapshot("a", marked, last=marked),
            snapshot("b", long),
            snapshot("c", long),
            init=(snapshot("i", long),),
        ),
        {},
    )
    share = MAX_POD_MESSAGE_BYTES // 4
    assert body["containerStatuses"][0]["state"]["terminated"]["message"] == "s" + "m" * (share - 1)
    assert len(body["containerStatuses"][0]["lastState"]["terminated"]["message"]) == share
    assert len(body["initContainerStatuses"][0]["state"]["terminated"]["message"]) == share
