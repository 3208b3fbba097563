"""Processes the lab starts: each dies with the process that started it."""

from __future__ import annotations

import ctypes
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the supervisor dies, so a crashed
    supervisor never leaves the lab's processes behind."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (reaped or not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state follows the command in parentheses, which may itself hold ") "
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
