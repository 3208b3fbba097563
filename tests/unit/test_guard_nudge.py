"""The watches that start the guard's next round early (guard/nudge.py) and the loop's
use of them (Guard.run with `wake`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from kubehoist.guard import nudge
from kubehoist.guard.loop import Guard
from kubehoist.guard.metrics import GuardMetrics


class FakeClient:
    """`watch` yields `events` events then ends, or raises on the first `fail` calls."""

    def __init__(self, events: int, fail: int = 0) -> None:
        self.events = events
        self.fail = fail
        self.calls = 0

    def watch(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, object]]:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("the API server is away")
        for _ in range(self.events):
            yield "MODIFIED", object()
        threading.Event().wait(10)  # then nothing more happens


def nudges(client: FakeClient) -> nudge.Nudges:
    return nudge.Nudges(
        lambda: client,  # type: ignore[arg-type,return-value]
        namespace="kube-system",
        selectors=({"component": "kube-controller-manager"},),
        lease_namespace="kube-system",
        lease_name="kube-controller-manager",
    )


def test_an_event_sets_wake() -> None:
    n = nudges(FakeClient(events=1)).start()
    try:
        assert n.wake.wait(5)
    finally:
        n.stop()


def test_a_failing_watch_is_started_again() -> None:
    client = FakeClient(events=1, fail=2)
    n = nudges(client)
    n._watches = n._watches[:1]  # the pod watch alone: calls are counted once each
    n.start()
    try:
        assert n.wake.wait(10)
        assert client.calls == 3  # two failures, then the watch that delivered
    finally:
        n.stop()


class Steps(Guard):
    """A guard whose round only records when it ran."""

    def __init__(self, interval_s: float) -> None:  # no API, no node files
        self.rounds: list[float] = []
        self.config = type("C", (), {"interval_s": interval_s})()
        self.log = lambda record: None
        self.clock = time.monotonic
        self.metrics = GuardMetrics("kube-controller-manager", "test")

    def step(self) -> None:  # type: ignore[override]
        self.rounds.append(time.monotonic())

    def resign(self) -> None:
        pass

    def _tags(self) -> dict[str, Any]:
        return {}


def test_wake_starts_the_next_round_before_the_interval_ends() -> None:
    guard = Steps(interval_s=30.0)
    stop, wake = threading.Event(), threading.Event()
    runner = threading.Thread(target=guard.run, args=(stop,), kwargs={"wake": wake})
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not guard.rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(guard.rounds) == 1
        wake.set()
        while len(guard.rounds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # the second round came with the wake, not after the 30 s interval, and not
        # before the least gap between rounds
        assert len(guard.rounds) == 2
        assert guard.rounds[1] - guard.rounds[0] >= nudge.MIN_GAP_S
    finally:
        stop.set()
        wake.set()
        runner.join(timeout=5)
    assert not runner.is_alive()
