"""`lab down` waits for the supervisor's process to be gone, not only for its lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kubehoist.lab import procs


def test_a_running_process_is_alive() -> None:
    assert procs.alive(os.getpid())


def test_a_zombie_and_a_reaped_process_are_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while procs.alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs.alive(child.pid)  # exited, not yet reaped: a zombie
    child.wait()
    assert not procs.alive(child.pid)


def test_a_name_holding_a_parenthesis_is_read_right() -> None:
    # /proc/PID/stat writes the name in parentheses; a name may hold ") Z "
    code = (
        "import ctypes, sys, time; "
        "ctypes.CDLL(None).prctl(15, b'x) Z (y', 0, 0, 0); "
        "print('named', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "named"
        assert "x) Z (y" in open(f"/proc/{child.pid}/stat").read()  # noqa: SIM115
        assert procs.alive(child.pid)
    finally:
        child.kill()
        child.wait()
