"""The guard's pods kept by LIST + WATCH (guard/podcache.py), and the guard's use of it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from kubehoist.guard import podcache
from kubehoist.guard.podcache import PodCache, wait_synced


def pod(uid: str, rv: str = "1", phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": f"p-{uid}", "resourceVersion": rv},
        "status": {"phase": phase},
    }


class Obj:
    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def to_dict(self) -> dict[str, Any]:
        return self.d


class Listing:
    def __init__(self, items: list[dict[str, Any]], rv: str) -> None:
        self.items = items
        self.resourceVersion = rv

    def __iter__(self) -> Iterator[Obj]:
        return iter(Obj(d) for d in self.items)


class FakeClient:
    """`list` answers `pods` at resourceVersion `rv`; `watch` yields what the test puts
    into `events` (an exception put there is raised)."""

    def __init__(self, pods: list[dict[str, Any]], rv: str = "10") -> None:
        self.pods = pods
        self.rv = rv
        self.events: queue.Queue[Any] = queue.Queue()
        self.list_calls: list[dict[str, Any]] = []
        self.watch_calls: list[dict[str, Any]] = []

    def list(self, res: Any, **kwargs: Any) -> Listing:
        self.list_calls.append(kwargs)
        return Listing(list(self.pods), self.rv)

    def watch(self, res: Any, **kwargs: Any) -> Iterator[tuple[str, Obj]]:
        self.watch_calls.append(kwargs)
        while True:
            item = self.events.get()
            if isinstance(item, BaseException):
                raise item
            yield item[0], Obj(item[1])


def cache(client: FakeClient, **kw: Any) -> PodCache:
    return PodCache(
        lambda: client,  # type: ignore[arg-type,return-value]
        namespace="kube-system",
        selectors=({"component": "kube-controller-manager"},),
        **kw,
    )


def until(pred: Any, timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pred():
            return True
        done.wait(0.01)
    return bool(pred())


def test_no_snapshot_before_the_first_list() -> None:
    c = cache(FakeClient([pod("a")]))
    assert c.snapshot() is None


def test_list_then_watch_from_the_lists_resource_version() -> None:
    client = FakeClient([pod("a"), pod("b")], rv="42")
    wake = threading.Event()
    c = cache(client, wake=wake).start()
    try:
        assert wait_synced(c, 5)
        assert wake.is_set()
        snap = c.snapshot()
        assert snap is not None
        assert sorted(p["metadata"]["uid"] for p in snap) == ["a", "b"]
        assert until(lambda: bool(client.watch_calls))
        assert client.watch_calls[0]["resource_version"] == "42"
        assert client.watch_calls[0]["labels"] == {"component": "kube-controller-manager"}
        wake.clear()
        client.events.put(("MODIFIED", pod("a", rv="43", phase="Failed")))
        client.events.put(("DELETED", pod("b", rv="44")))
        client.events.put(("ADDED", pod("c", rv="45")))
        assert until(lambda: c.events == 3)
        assert wake.is_set()
        snap = c.snapshot()
        assert snap is not None
        by_uid = {p["metadata"]["uid"]: p for p in snap}
        assert sorted(by_uid) == ["a", "c"]
        assert by_uid["a"]["status"]["phase"] == "Failed"
        assert c.lists == 1  # events, not LISTs, after the first
    finally:
        c.stop()


def test_a_failed_watch_is_out_of_sync_until_listed_again() -> None:
    client = FakeClient([pod("a")], rv="10")
    c = cache(client, retry_s=0.3).start()
    try:
        assert wait_synced(c, 5)
        assert until(lambda: bool(client.watch_calls))
        client.pods = [pod("b")]  # what happened while the watch was broken
        client.rv = "99"
        client.events.put(ConnectionError("connection reset"))
        assert until(lambda: c.snapshot() is None, timeout=2)  # no stale answer meanwhile
        assert until(lambda: c.lists == 2)
        snap = c.snapshot()
        assert snap is not None and [p["metadata"]["uid"] for p in snap] == ["b"]
        assert until(lambda: len(client.watch_calls) == 2)
        assert client.watch_calls[1]["resource_version"] == "99"
    finally:
        c.stop()


def test_a_watch_resumed_from_too_old_a_version_is_listed_again_at_once() -> None:
    client = FakeClient([pod("a")], rv="10")
    c = cache(client, retry_s=30.0).start()
    try:
        assert wait_synced(c, 5)
        assert until(lambda: bool(client.watch_calls))
        client.pods = [pod("b")]
        client.rv = "99"
        client.events.put(ApiError(status=Status(code=410, message="too old resource version")))
        assert until(lambda: c.lists == 2, timeout=2)  # at once, not after retry_s (30 s)
        snap = c.snapshot()
        assert snap is not None and [p["metadata"]["uid"] for p in snap] == ["b"]
        assert until(lambda: len(client.watch_calls) == 2)
        assert client.watch_calls[1]["resource_version"] == "99"
        assert client.watch_calls[1]["server_timeout"] == podcache.WATCH_TIMEOUT_S
    finally:
        c.stop()


def test_a_healthy_watch_is_listed_again_every_resync_period() -> None:
    client = FakeClient([pod("a")])
    closed = threading.Event()

    def close(_client: Any) -> None:  # what closing the HTTP client does to the watch
        closed.set()
        client.events.put(ConnectionError("closed"))

    original = podcache._close
    podcache._close = close  # type: ignore[assignment]
    c = cache(client, resync_s=0.3, retry_s=30.0).start()
    try:
        assert wait_synced(c, 5)
        assert until(lambda: c.lists >= 2, timeout=5)
        assert closed.is_set()
        # a planned resync lists again at once (not after retry_s) and stays in sync
        assert c.synced
    finally:
        podcache._close = original  # type: ignore[assignment]
        c.stop()


def test_two_selectors_are_merged_by_uid_and_both_must_be_in_sync() -> None:
    client = FakeClient([pod("a")])
    c = PodCache(
        lambda: client,  # type: ignore[arg-type,return-value]
        namespace="kube-system",
        selectors=({"component": "x"}, {"app": "x"}),
    )
    c.apply(0, "ADDED", pod("a"))
    assert c.snapshot() is None  # never listed
    c._synced = [True, True]
    c.apply(1, "ADDED", pod("a"))
    c.apply(1, "ADDED", pod("z"))
    snap = c.snapshot()
    assert snap is not None and sorted(p["metadata"]["uid"] for p in snap) == ["a", "z"]
    c._synced[1] = False
    assert c.snapshot() is None


class GuardReads:
    """Just what Guard._read_pods touches."""

    def __init__(self, cache: PodCache | None, client: Any) -> None:
        self.pod_cache = cache
        self.client = client
        self.config = type("C", (), {"namespace": "kube-system", "component": None})()

    def pod_selectors(self) -> tuple[dict[str, Any], ...]:
        return ({"component": "kube-controller-manager"},)

    def _server(self) -> str:
        return "test"


def test_the_guard_reads_the_cache_when_in_sync_and_lists_otherwise() -> None:
    from kubehoist.guard.loop import Guard

    client = FakeClient([pod("listed")])
    c = cache(FakeClient([]))
    c._synced = [True]
    c.apply(0, "ADDED", pod("cached"))
    reads = GuardReads(c, client)
    got = Guard._read_pods(reads)  # type: ignore[arg-type]
    assert [p["metadata"]["uid"] for p in got] == ["cached"]
    assert client.list_calls == []
    c._synced = [False]
    got = Guard._read_pods(reads)  # type: ignore[arg-type]
    assert [p["metadata"]["uid"] for p in got] == ["listed"]
    assert len(client.list_calls) == 1


def test_verbs_of_requests_as_the_api_server_names_them() -> None:
    from kubehoist.kube.transport import RequestRecord, verb_of

    def verb(method: str, path: str, query: str = "") -> str:
        return verb_of(
            RequestRecord(method=method, path=path, query=query, status=200, elapsed_s=0.0)
        )

    assert verb("GET", "/api/v1/namespaces/kube-system/pods", "labelSelector=a%3Db") == "list"
    assert verb("GET", "/api/v1/namespaces/kube-system/pods", "watch=true&x=1") == "watch"
    assert verb("GET", "/api/v1/namespaces/kube-system/pods/p") == "get"
    assert verb("GET", "/apis/coordination.k8s.io/v1/namespaces/ks/leases/kcm") == "get"
    assert verb("GET", "/apis/coordination.k8s.io/v1/namespaces/ks/leases") == "list"
    assert verb("GET", "/api/v1/nodes") == "list"
    assert verb("GET", "/api/v1/nodes/n1") == "get"
    assert verb("GET", "/api/v1/namespaces") == "list"
    assert verb("GET", "/api/v1/namespaces/kube-system") == "get"
    assert verb("PUT", "/apis/coordination.k8s.io/v1/namespaces/ks/leases/kcm") == "update"
    assert verb("POST", "/api/v1/namespaces/ks/events") == "create"
    assert verb("PATCH", "/apis/apps/v1/namespaces/ks/deployments/d") == "patch"
    assert verb("DELETE", "/api/v1/namespaces/ks/pods/p") == "delete"


def test_a_request_log_keeps_counting_but_keeps_only_the_last_records() -> None:
    from kubehoist.kube.transport import RequestLog, RequestRecord

    seen: list[RequestRecord] = []
    log = RequestLog(keep=3, listeners=[seen.append])
    for i in range(10):
        log.add(RequestRecord(method="GET", path=f"/p{i}", query="", status=200, elapsed_s=0))
    assert log.count == 10
    assert [r.path for r in log.records] == ["/p7", "/p8", "/p9"]
    assert len(seen) == 10


def test_the_guards_request_counter_by_verb() -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from kubehoist.guard.metrics import GuardMetrics
    from kubehoist.kube.transport import RequestRecord

    m = GuardMetrics("kube-controller-manager", "cp-1")
    for q in ("watch=true", "", ""):
        m.api_request(
            RequestRecord(
                method="GET", path="/api/v1/namespaces/ks/pods", query=q, status=200, elapsed_s=0
            )
        )
    text = generate_latest(m.registry).decode()
    values = {
        s.labels["verb"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "kubehoist_guard_api_requests_total"
    }
    assert values == {"watch": 1.0, "list": 2.0}


def test_the_logged_verb_and_the_error_messages_verb_are_one_parse() -> None:
    """The metrics' verb (from a logged request) and an error message's verb (from the
    request itself) agree, collections and watches included."""
    import httpx2

    from kubehoist.kube.errors import call_of
    from kubehoist.kube.transport import RequestRecord, verb_of

    cases = [
        ("GET", "/api/v1/namespaces/ks/pods", "watch=true&labelSelector=a%3Db"),
        ("GET", "/api/v1/namespaces/ks/pods", "labelSelector=a%3Db"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/ks/leases/kcm", ""),
        ("DELETE", "/api/v1/namespaces/ks/pods", "labelSelector=x"),
        ("DELETE", "/api/v1/namespaces/ks/pods/p", ""),
        ("PUT", "/api/v1/namespaces/ks/configmaps/c", ""),
    ]
    for method, path, query in cases:
        url = f"https://h:6443{path}" + (f"?{query}" if query else "")
        logged = RequestRecord(method=method, path=path, query=query, status=200, elapsed_s=0.0)
        assert verb_of(logged) == call_of(httpx2.Request(method, url)).verb, (method, path)
    delete_all = RequestRecord(
        method="DELETE", path="/api/v1/namespaces/ks/pods", query="", status=200, elapsed_s=0.0
    )
    assert verb_of(delete_all) == "deletecollection"
