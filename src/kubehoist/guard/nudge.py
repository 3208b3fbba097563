"""Watches that end the guard's wait between two rounds early.

The guard decides from a fresh read every round (`Guard.step`); its `interval` (1 s)
bounds how stale its view can get. A kubelet's report that a leader's container ended
arrives at a random moment of that interval, so a reap waited half a second on average
for the next round. These watches (the component's pods, by the same two selectors the
guard lists, and its Lease) set `wake` on every event, and the loop starts its next
round at once — at most every `MIN_GAP_S`. They only make a round come sooner: what a
round reads and decides is unchanged, and a watch that fails is retried while the
rounds go on at `interval`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import Client
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

MIN_GAP_S = 0.1
"""The least time between two rounds, however many events arrive."""

RETRY_S = 1.0
"""After a watch failed (the API server away, a timeout), before it starts again."""


def _pods(namespace: str, labels: dict[str, Any]) -> Callable[[Client], Any]:
    return lambda c: c.watch(Pod, namespace=namespace, labels=labels)


class Nudges:
    def __init__(
        self,
        connect: Callable[[], Client],
        *,
        namespace: str,
        selectors: Sequence[Mapping[str, str]],
        lease_namespace: str,
        lease_name: str,
    ) -> None:
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._connect = connect
        self._watches: list[Callable[[Client], Any]] = [
            _pods(namespace, dict(labels)) for labels in selectors
        ]
        self._watches.append(
            lambda c: c.watch(
                Lease, namespace=lease_namespace, fields={"metadata.name": lease_name}
            )
        )

    def start(self) -> Nudges:
        for watch in self._watches:
            threading.Thread(target=self._run, args=(watch,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    def _run(self, watch: Callable[[Client], Any]) -> None:
        while not self._stop.is_set():
            try:
                client = self._connect()
                for _event in watch(client):
                    if self._stop.is_set():
                        return
                    self.wake.set()
            except Exception:
                pass
            self._stop.wait(RETRY_S)
