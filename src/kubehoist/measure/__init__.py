"""Measures of what a user feels: the reconcile outage of a cut-over or failover.

Pure: samples in, figures out. The probe that takes the samples is `kube.probe`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One probe object: created at `sent` (seconds, the observer's monotonic clock),
    reconciled (its ReplicaSet seen) at `reconciled`, or never within the run."""

    seq: int
    sent: float
    reconciled: float | None

    @property
    def latency(self) -> float | None:
        return None if self.reconciled is None else self.reconciled - self.sent


@dataclass(frozen=True)
class Outage:
    baseline: float  # median latency in quiet times
    worst: float  # the longest latency (or time waited, for a probe never reconciled)
    outage: float  # worst - baseline, at least 0
    unreconciled: int  # probes never reconciled before the end of the run
    samples: int


def baseline_of(samples: Sequence[Sample]) -> float:
    """Median latency of reconciled samples (the quiet baseline)."""
    lat = [s.latency for s in samples if s.latency is not None]
    if not lat:
        raise ValueError("no reconciled sample to take a baseline from")
    return statistics.median(lat)


def outage_of(samples: Sequence[Sample], *, baseline: float, end: float) -> Outage:
    """The reconcile outage of an event: the longest probe latency minus the quiet
    baseline. A probe never reconciled counts as waiting until `end`."""
    if not samples:
        raise ValueError("no samples")
    worst = 0.0
    unreconciled = 0
    for s in samples:
        if s.latency is None:
            unreconciled += 1
            worst = max(worst, end - s.sent)
        else:
            worst = max(worst, s.latency)
    return Outage(
        baseline=baseline,
        worst=worst,
        outage=max(0.0, worst - baseline),
        unreconciled=unreconciled,
        samples=len(samples),
    )
