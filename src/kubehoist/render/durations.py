"""Go `time.Duration` strings ("15s", "1m30s", "1.5h") in integer nanoseconds.

The components parse their leader-election flags with Go's `time.ParseDuration`, so
kubehoist validates them with the same grammar and the same arithmetic.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX = 2**63 - 1


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string; ValueError if Go would reject it."""
    s = text.strip()
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += Fraction(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    ns = int(total)  # Go truncates fractional nanoseconds
    if ns > _MAX:
        raise ValueError(f"invalid duration {text!r}: out of range")
    return sign * ns


def format_duration(ns: int) -> str:
    """A short human form ("15s", "1.5s", "250ms") for messages."""
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns >= 1_000_000_000:
        return f"{ns / 1_000_000_000:g}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns}ns"
