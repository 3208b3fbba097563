"""The lab node's `systemctl` shim against the init's side of its protocol: kubeadm's
questions answered as systemd answers them, start/stop/restart handed to the init."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from kubehoist.lab import systemctl


@pytest.fixture
def shim(tmp_path: Path) -> tuple[Path, Path]:
    control = tmp_path / "control"
    path = tmp_path / "systemctl"
    systemctl.install(control, path)
    path.write_text(systemctl.SHIM.replace(systemctl.CONTROL_DIR, str(control)))
    return path, control


def _run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)


def test_questions_kubeadm_asks(shim: tuple[Path, Path]) -> None:
    path, control = shim
    systemctl.write_state(control, "kubelet", "activating")
    systemctl.write_state(control, "containerd", "active")
    # initsystem.ServiceExists: no "Loaded: not-found" / "could not be found"
    status = _run(path, "status", "kubelet")
    assert "Loaded: loaded" in status.stdout and status.returncode == 3
    assert "could not be found" in _run(path, "status", "docker").stderr
    assert _run(path, "is-enabled", "kubelet.service").returncode == 0
    assert _run(path, "is-enabled", "docker").returncode == 1
    # ServiceIsActive takes "activating" (a crash loop) as active too
    assert _run(path, "is-active", "kubelet").stdout.strip() == "activating"
    assert _run(path, "is-active", "containerd").returncode == 0
    assert _run(path, "daemon-reload").returncode == 0
    assert _run(path, "restart", "containerd").returncode == 1


def test_restart_waits_for_the_init(shim: tuple[Path, Path]) -> None:
    path, control = shim
    seen: list[tuple[str, str]] = []

    def init() -> None:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            for request in systemctl.pending(control):
                seen.append((request.verb, request.unit))
                time.sleep(0.3)  # the kubelet stopping and starting
                request.answer(0)
            time.sleep(0.05)

    thread = threading.Thread(target=init)
    thread.start()
    start = time.monotonic()
    proc = _run(path, "restart", "kubelet")
    took = time.monotonic() - start
    thread.join()
    assert proc.returncode == 0, proc.stderr
    assert seen == [("restart", "kubelet")]
    assert took >= 0.3  # it returned only once the init had answered
    assert list(control.glob("req.*")) == []


def test_a_bad_request_file_is_answered_with_failure(tmp_path: Path) -> None:
    (tmp_path / "req.1").write_text("reload containerd\n")
    assert systemctl.pending(tmp_path) == []
    assert (tmp_path / "req.1.done").read_text().strip() == "1"
