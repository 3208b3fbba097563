"""Processes the lab starts: each dies with the process that started it."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the supervisor dies, so a crashed
    supervisor never leaves the lab's processes behind."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
