"""render's table of flags (kubehoist.flagtable) against the real components' `--help`
(the lab's v1.36 binaries): every flag they have is in the table, on the right side
(a boolean takes its value only after `=`; any other flag may take the next word)."""

from __future__ import annotations

import re
import subprocess

import pytest

from kubehoist import flagtable
from kubehoist.lab.binaries import locate

pytestmark = pytest.mark.lab

# pflag's usage line: `  -v, --name TYPE   usage`; a boolean shows no TYPE.
USAGE = re.compile(r"^\s+(?:-(\w), )?--([A-Za-z0-9_-]+)(?: (\S+))?(?:\s{2,}|$)")


def real_flags(binary: str) -> tuple[set[str], set[str]]:
    out = subprocess.run(
        [str(locate().path(binary)), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    bools: set[str] = set()
    values: set[str] = set()
    for line in out.splitlines():
        if m := USAGE.match(line):
            short, name, kind = m.groups()
            # `--version version[=true]`: a value only after `=`, as a boolean takes it
            side = bools if kind is None or kind.endswith("[=true]") else values
            side.add(name)
            if short:
                side.add(short)
    assert len(bools) + len(values) > 40, out[:2000]
    return bools, values


@pytest.mark.parametrize(
    ("binary", "bools", "values"),
    [
        ("kube-controller-manager", flagtable.KCM_BOOLS, flagtable.KCM_VALUES),
        ("kube-scheduler", flagtable.SCHEDULER_BOOLS, flagtable.SCHEDULER_VALUES),
    ],
)
def test_the_flag_table_matches_the_components_help(
    binary: str, bools: frozenset[str], values: frozenset[str]
) -> None:
    real_bools, real_values = real_flags(binary)
    assert sorted(real_bools - bools) == [], "booleans missing from the table"
    assert sorted(real_values - values) == [], "value flags missing from the table"
    assert sorted(real_bools & values) == [], "booleans the table takes for value flags"
    assert sorted(real_values & bools) == [], "value flags the table takes for booleans"
