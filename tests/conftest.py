"""Test settings shared by both tiers.

In CI (CI=true) hypothesis runs derandomized: the same examples every run, so a run
is reproducible; on a developer's machine it explores new examples each time.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# The longest file starts first and the unit tests, short, come last to fill the gaps
# (scripts/test runs `--dist loadfile --no-loadscope-reorder`). test_upgrade.py alone
# took 19.5 min in the cold CI run of 2d849a7 (its own 3-control-plane lab, two
# versions). That run's pytest took 3361 s against 3324-3336 s before this order: no
# gain measured, test_versions' v1.35 labs became the tail (docs/bench.md).
_LONGEST_FIRST = ("tests/e2e/test_upgrade.py",)


def _run_order(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path in _LONGEST_FIRST:
        return _LONGEST_FIRST.index(path)
    return len(_LONGEST_FIRST) + (1 if path.startswith("tests/unit/") else 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_run_order)  # stable: the order within a file stays
