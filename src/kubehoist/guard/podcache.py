"""The component's pods as the guard sees them, kept by watches instead of a LIST a round.

A guard used to LIST its component's pods (two label selectors) every round, once a
second on every control-plane node. The API server answers a label-selected LIST by
walking every pod of the namespace, so on a 5,000-node cluster (~15,000 kube-system
pods, mostly DaemonSets) three guards made it filter ~90,000 pods a second for the ~6
they wanted. Here each selector is LISTed once and then WATCHed from the LIST's
resourceVersion, as client-go's reflector does: the guard's reads cost the API server
a handful of events when the component's pods change, whatever the size of the
namespace (bench/scale.py measures it).

What the guard decides from this view stays safe when the view lags: the facts that
make a holder "certainly dead" (a container terminated or replaced, a pod deleted)
only ever become true, and events arrive in order, so a late view can make the
guard slower but never wrong; the Lease itself is still read afresh every round and
released only with its resourceVersion.

A selector whose watch failed is not in sync until its next LIST: `snapshot()` then
answers None and the guard LISTs as before. A watch can also hang without failing: the
guard reaches the API through an endpoint that may pin its connection to an API server
whose node dropped off the network. Each WATCH asks the server to end it after
`WATCH_TIMEOUT_S` (lightkube resumes it from the last version seen), and kubehoist's
transport gives it a read timeout 10 s later (`kube.transport.bound_watch_read`), so
a dead connection fails, and the selector is listed again, within 30 s of its last
byte. A resume from a version the API server no longer holds (410 Gone: the watch
cache moved on while the selection was quiet) lists again at once. Every `RESYNC_S`
the selector is LISTed again anyway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod

RETRY_S = 1.0
"""After a LIST or WATCH failed (the API server away, a 410 Gone), before listing again."""

RESYNC_S = 300.0
"""How often each selector is LISTed again although its watch is healthy."""

WATCH_TIMEOUT_S = 20
"""The server-side timeout asked for each WATCH (the client resumes it from the last
resourceVersion seen when the server closes it): with the transport's read bound, the
longest a dead connection keeps the view stale is this plus 10 s. It costs one WATCH
request per selector and period (0.1 a second for a guard's two selectors)."""

Json = dict[str, Any]


def _uid(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


class PodCache:
    """LIST then WATCH, per label selector, of one namespace's pods."""

    def __init__(
        self,
        connect: Callable[[], Client],
        *,
        namespace: str,
        selectors: Sequence[Mapping[str, str]],
        wake: threading.Event | None = None,
        resync_s: float = RESYNC_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._connect = connect
        self.namespace = namespace
        self.selectors = [dict(s) for s in selectors]
        self.wake = wake
        self.resync_s = resync_s
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._stores: list[dict[str, Json]] = [{} for _ in self.selectors]
        self._synced = [False for _ in self.selectors]
        self._stop = threading.Event()
        self._clients: list[Client | None] = [None for _ in self.selectors]
        self._timers: list[threading.Timer | None] = [None for _ in self.selectors]
        self.lists = 0
        """LISTs made so far (every selector together)."""
        self.events = 0
        """Watch events applied so far."""

    # -- what the guard reads -------------------------------------------------------------
    def snapshot(self) -> list[Json] | None:
        """Every pod of every selector (each once), or None while a selector is not in
        sync (before its first LIST, or after its watch failed until it is listed again)."""
        with self._lock:
            if not all(self._synced):
                return None
            merged: dict[str, Json] = {}
            for store in self._stores:
                merged.update(store)
            return list(merged.values())

    @property
    def synced(self) -> bool:
        with self._lock:
            return all(self._synced)

    # -- life -----------------------------------------------------------------------------
    def start(self) -> PodCache:
        for index in range(len(self.selectors)):
            threading.Thread(
                target=self._run, args=(index,), name=f"podcache-{index}", daemon=True
            ).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for timer in list(self._timers):
            if timer is not None:
                timer.cancel()
        for client in list(self._clients):
            _close(client)

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            resync = threading.Event()
            try:
                client = self._connect()
                self._clients[index] = client
                timer = threading.Timer(self.resync_s, _resync, args=(resync, client))
                timer.daemon = True
                self._timers[index] = timer
                timer.start()
                try:
                    self._list_and_watch(index, client)
                finally:
                    timer.cancel()
                    self._timers[index] = None
            except ApiError as exc:
                if exc.status.code == 410:  # resumed from too old a version: LIST at once
                    with self._lock:
                        self._synced[index] = False
                    continue
            except Exception:  # any failure: out of sync, list again
                pass
            finally:
                self._clients[index] = None
            if self._stop.is_set():
                return
            if not resync.is_set():
                with self._lock:
                    self._synced[index] = False
                self._stop.wait(self.retry_s)

    def _list_and_watch(self, index: int, client: Client) -> None:
        labels: dict[str, Any] = dict(self.selectors[index])
        listing = client.list(Pod, namespace=self.namespace, labels=labels, chunk_size=500)
        store = {_uid(d): d for d in (pod.to_dict() for pod in listing)}
        version = listing.resourceVersion
        with self._lock:
            self._stores[index] = store
            self._synced[index] = True
            self.lists += 1
        self._poke()
        for kind, pod in client.watch(
            Pod,
            namespace=self.namespace,
            labels=labels,
            resource_version=version,
            server_timeout=WATCH_TIMEOUT_S,
        ):
            if self._stop.is_set():
                return
            self.apply(index, kind, pod.to_dict())

    def apply(self, index: int, kind: str, obj: Json) -> None:
        """One watch event into selector `index`'s store."""
        uid = _uid(obj)
        with self._lock:
            if kind == "DELETED":
                self._stores[index].pop(uid, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._stores[index][uid] = obj
            else:  # BOOKMARK or anything new: no object change
                return
            self.events += 1
        self._poke()

    def _poke(self) -> None:
        if self.wake is not None:
            self.wake.set()


def _resync(flag: threading.Event, client: Client) -> None:
    flag.set()
    _close(client)


def _close(client: Client | None) -> None:
    """Close a client from another thread. A WATCH blocked reading on it is not woken:
    it fails at its next request, when the server has ended it (`WATCH_TIMEOUT_S`) or
    its read timed out."""
    if client is None:
        return
    with contextlib.suppress(Exception):  # closing is best effort
        client._client._client.close()  # lightkube Client -> GenericClient -> httpx client


def wait_synced(cache: PodCache, timeout: float) -> bool:
    """Wait until every selector is in sync (tests, benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache.synced:
            return True
        time.sleep(0.05)
    return cache.synced
