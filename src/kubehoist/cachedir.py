"""The cache every build writes into (`~/.cache/kubehoist`, or $KUBEHOIST_CACHE), keyed
by version or content, and the lock that lets two runs share it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    if env := os.environ.get("KUBEHOIST_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubehoist"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock held for the block (builds into the cache use it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
