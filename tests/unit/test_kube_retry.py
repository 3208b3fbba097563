"""The retry policy (kube/retry.py), the retrying transport, and the one error mapping of
the verbs that change a cluster (kube.session): an API server that goes away for a few
seconds is ridden out, a longer outage is one line naming the call and the object, and
no httpx or lightkube exception leaves a `Session`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Pod

from kubehoist import kube
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases, retry
from kubehoist.kube.client import Session, absent_ok, get_or_none
from kubehoist.kube.errors import (
    ConflictError,
    NotFoundError,
    UnreachableError,
    call_of,
    describe,
    transient,
)
from kubehoist.kube.retry import Backoff, RetryPolicy, repeatable, retry_error, retry_status
from kubehoist.kube.transport import CountingTransport, RequestLog, RetryingTransport
from kubehoist.pivot import state as statemod
from tests.unit.kubefake import lease, write_kubeconfig

SERVER = "https://10.0.0.1:6443"
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
APPLY = "application/apply-patch+yaml"


# --- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "ctype", "expected"),
    [
        ("GET", "", True),
        ("DELETE", "", True),
        ("PATCH", APPLY, True),
        ("PATCH", "application/merge-patch+json", True),
        ("PATCH", "application/strategic-merge-patch+json; charset=utf-8", True),
        ("PATCH", "application/json-patch+json", False),
        ("POST", "application/json", False),
        ("PUT", "application/json", False),
    ],
)
def test_repeatable_requests(method: str, ctype: str, expected: bool) -> None:
    assert repeatable(method, ctype) is expected


def _req(method: str = "GET") -> httpx2.Request:
    return httpx2.Request(method, f"{SERVER}{LEASE_PATH}")


@pytest.mark.parametrize(
    ("exc", "method", "ctype", "expected"),
    [
        # never reached the server: any verb goes again
        (httpx2.ConnectError("refused"), "POST", "application/json", True),
        (httpx2.ConnectError("[SSL: UNEXPECTED_EOF_WHILE_READING]"), "PUT", "", True),
        (httpx2.ConnectTimeout("slow"), "POST", "", True),
        (httpx2.PoolTimeout("pool"), "PUT", "", True),
        # may have been done: only what can be repeated
        (httpx2.ReadError("reset"), "GET", "", True),
        (httpx2.RemoteProtocolError("EOF"), "DELETE", "", True),
        (httpx2.ReadTimeout("slow"), "PATCH", APPLY, True),
        (httpx2.ReadError("reset"), "POST", "application/json", False),
        (httpx2.RemoteProtocolError("EOF"), "PUT", "application/json", False),
        (httpx2.ReadTimeout("slow"), "PATCH", "application/json-patch+json", False),
        # not a transport failure at all
        (httpx2.UnsupportedProtocol("ftp"), "GET", "", False),
    ],
)
def test_which_failures_are_retried(
    exc: Exception, method: str, ctype: str, expected: bool
) -> None:
    assert retry_error(exc, method=method, content_type=ctype) is expected


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (503, "GET", True),
        (500, "GET", True),
        (504, "DELETE", True),
        (429, "POST", True),  # rejected before it was handled
        (429, "PUT", True),
        (503, "POST", False),  # may have been handled
        (503, "PUT", False),
        (404, "GET", False),
        (403, "GET", False),
        (401, "GET", False),
        (409, "PUT", False),
        (422, "PATCH", False),
    ],
)
def test_which_answers_are_retried(status: int, method: str, expected: bool) -> None:
    assert retry_status(status, method=method) is expected


def test_backoff_grows_is_capped_and_jittered() -> None:
    b = Backoff(initial_s=0.2, factor=2.0, max_s=4.0, jitter=0.3)
    mids = [b.delay(n, rand=0.5) for n in range(8)]
    assert mids[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert mids[5:] == pytest.approx([4.0, 4.0, 4.0])
    assert b.delay(3, rand=0.0) == pytest.approx(1.6 * 0.7)
    assert b.delay(3, rand=1.0) == pytest.approx(1.6 * 1.3)
    assert b.delay(30, rand=1.0) <= 4.0 * 1.3


def test_policy_spends_its_budget_and_ends_on_a_last_attempt() -> None:
    p = RetryPolicy(budget_s=10.0, backoff=Backoff(initial_s=1.0, factor=2.0, max_s=8.0, jitter=0))
    assert p.next_delay(attempt=0, started=100.0, now=100.0, rand=0.5) == 1.0
    assert p.next_delay(attempt=3, started=100.0, now=103.0, rand=0.5) == 7.0  # cut at the end
    assert p.next_delay(attempt=4, started=100.0, now=110.0, rand=0.5) is None
    assert p.next_delay(attempt=0, started=100.0, now=100.0, rand=0.5, hint_s=3.0) == 3.0


def test_within_shortens_the_budget_and_nests() -> None:
    p = RetryPolicy(budget_s=60.0)
    now = time.monotonic()
    assert retry.deadline() is None
    with retry.within(5.0, clock=now):
        assert p.remaining(started=now, now=now) == pytest.approx(5.0)
        with retry.within(30.0, clock=now):  # an inner block never extends the outer one
            assert p.remaining(started=now, now=now) == pytest.approx(5.0)
        with retry.within(1.0, clock=now):
            assert p.remaining(started=now, now=now) == pytest.approx(1.0)
    assert retry.deadline() is None
    assert p.remaining(started=now, now=now) == pytest.approx(60.0)


# --- the transport, with a fake clock --------------------------------------------------------


@dataclass
class Clock:
    """time.monotonic() and time.sleep() of a test: sleeping moves time on."""

    now: float = field(default_factory=time.monotonic)
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Outage:
    """An API server that refuses connections from `start` for `length` seconds (of the
    test's clock), answering `answer` otherwise."""

    clock: Clock
    answer: Callable[[httpx2.Request], httpx2.Response]
    length: float
    start: float = 0.0
    fail: Callable[[httpx2.Request], Exception] = field(
        default=lambda r: httpx2.ConnectError("[Errno 111] Connection refused", request=r)
    )
    seen: list[httpx2.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start += self.clock.now

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        if self.start <= self.clock.now < self.start + self.length:
            raise self.fail(request)
        return self.answer(request)


def _lease_answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=lease())


def _session(
    tmp_path: Path,
    handler: Callable[[httpx2.Request], httpx2.Response],
    clock: Clock,
    budget: float,
) -> tuple[Session, RequestLog]:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config", server=SERVER))
    transport = RetryingTransport(
        CountingTransport(httpx2.MockTransport(handler), where.log),
        RetryPolicy(budget_s=budget),
        sleep=clock.sleep,
        clock=clock,
        rand=lambda: 0.5,
    )
    return Session(where.config, transport=transport, trust_env=False, server=SERVER), where.log


def test_a_short_outage_is_ridden_out(tmp_path: Path) -> None:
    clock = Clock()
    outage = Outage(clock, _lease_answer, length=5.0)
    client, log = _session(tmp_path, outage.handler, clock, budget=60.0)
    got = client.get(Lease, "kube-controller-manager", namespace="kube-system")
    assert got.spec is not None and got.spec.holderIdentity
    assert log.count == len(outage.seen) > 3  # every attempt is in the request log
    assert [r.status for r in list(log.records)[:-1]] == [None] * (log.count - 1)
    assert log.records[-1].status == 200
    assert 5.0 <= sum(clock.slept) < 5.0 + 4.0 * 1.3  # back within one capped back-off
    assert clock.slept == sorted(clock.slept)


def test_a_long_outage_is_one_line_naming_the_call_and_the_object(tmp_path: Path) -> None:
    clock = Clock()
    outage = Outage(clock, _lease_answer, length=1000.0)
    client, _ = _session(tmp_path, outage.handler, clock, budget=30.0)
    with pytest.raises(UnreachableError) as info:
        client.get(Lease, "kube-controller-manager", namespace="kube-system")
    assert info.value.message == (
        f"cannot reach the API server at {SERVER}: connection refused "
        "(get leases kube-system/kube-controller-manager)"
    )
    assert sum(clock.slept) == pytest.approx(30.0)  # the budget, not more
    assert transient(info.value)


def test_an_answer_lost_on_a_create_is_not_sent_again(tmp_path: Path) -> None:
    clock = Clock()
    outage = Outage(
        clock,
        lambda r: httpx2.Response(201, json=json.loads(r.content)),
        length=1000.0,
        fail=lambda r: httpx2.ReadError("Connection reset by peer", request=r),
    )
    client, _ = _session(tmp_path, outage.handler, clock, budget=30.0)
    cm = ConfigMap(metadata=ObjectMeta(name="x", namespace="kube-system"), data={"a": "b"})
    with pytest.raises(UnreachableError) as info:
        client.create(cm)
    assert len(outage.seen) == 1 and clock.slept == []
    assert info.value.message.endswith("(create configmaps kube-system)")


def test_server_side_apply_is_sent_again_through_503s(tmp_path: Path) -> None:
    clock = Clock()
    answers = iter(
        [
            httpx2.Response(503, text="upstream connect error", headers={"retry-after": "2"}),
            httpx2.Response(
                503,
                json={"kind": "Status", "code": 503, "reason": "ServiceUnavailable"},
                headers={"content-type": "application/json"},
            ),
        ]
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.method == "PATCH"
        assert request.headers["content-type"] == APPLY
        return next(answers, None) or httpx2.Response(200, json=json.loads(request.content))

    client, log = _session(tmp_path, handler, clock, budget=60.0)
    dep = Deployment(metadata=ObjectMeta(name="kube-controller-manager", namespace="kube-system"))
    client.apply(dep, field_manager="kubehoist", force=True)
    assert [r.status for r in log.records] == [503, 503, 200]
    assert clock.slept[0] == 2.0  # the server's Retry-After


def test_server_errors_are_mapped_and_name_the_call(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/pods/gone"):
            return _status(404, "NotFound", 'pods "gone" not found')
        if request.method == "PUT":
            return _status(409, "Conflict", "the object has been modified")
        if request.method == "POST":
            return _status(500, "InternalError", "etcdserver: request timed out")
        return _status(403, "Forbidden", 'pods is forbidden: User "jane" cannot list')

    clock = Clock()
    client, _ = _session(tmp_path, handler, clock, budget=10.0)
    with pytest.raises(NotFoundError) as nf:
        client.get(Pod, "gone", namespace="kube-system")
    assert nf.value.message == (
        'Error from server (NotFound): pods "gone" not found in namespace kube-system'
    )
    assert get_or_none(client, Pod, "gone", namespace="kube-system") is None
    cm = ConfigMap(
        metadata=ObjectMeta(name="x", namespace="kube-system", resourceVersion="7"), data={}
    )
    with pytest.raises(ConflictError):
        client.replace(cm)
    with pytest.raises(KubehoistError) as err:
        client.create(cm)
    assert err.value.message == (
        "Error from server (InternalError): etcdserver: request timed out "
        "(create configmaps kube-system)"
    )
    assert clock.slept == []  # a 500 on a create is not repeated: it may have been done
    with pytest.raises(kube.ForbiddenError) as fb:
        client.list(Pod, namespace="kube-system")
    assert fb.value.message == 'forbidden: cannot list pods in namespace kube-system (user "jane")'


def test_absent_ok_swallows_only_not_found(tmp_path: Path) -> None:
    client, _ = _session(tmp_path, lambda r: _status(403, "Forbidden", "no"), Clock(), budget=1.0)
    with pytest.raises(kube.ForbiddenError), absent_ok():
        client.delete(Pod, "x", namespace="kube-system")


def test_a_list_that_fails_on_a_later_page_is_mapped_inside_the_call(tmp_path: Path) -> None:
    clock = Clock()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if "continue" in request.url.params:
            raise httpx2.ReadError("reset", request=request)
        return httpx2.Response(
            200,
            json={
                "kind": "PodList",
                "metadata": {"continue": "next", "resourceVersion": "5"},
                "items": [],
            },
        )

    client, log = _session(tmp_path, handler, clock, budget=3.0)
    with pytest.raises(UnreachableError) as info:
        client.list(Pod, namespace="kube-system", chunk_size=1)
    assert info.value.message.endswith("(list pods kube-system)")
    assert log.count > 2  # the second page was retried (a GET)


def _status(code: int, reason: str, message: str) -> httpx2.Response:
    return httpx2.Response(
        code,
        json={"kind": "Status", "status": "Failure", "code": code, "reason": reason,
              "message": message},
        headers={"content-type": "application/json"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "ctype", "expected"),
    [
        ("GET", LEASE_PATH, "", "get leases kube-system/kube-controller-manager"),
        ("GET", "/api/v1/namespaces/kube-system/pods", "", "list pods kube-system"),
        ("GET", "/api/v1/nodes", "", "list nodes"),
        ("GET", "/api/v1/namespaces/kube-system/pods/h/log", "", "get pods/log kube-system/h"),
        ("POST", "/api/v1/namespaces/kube-system/pods", "", "create pods kube-system"),
        ("PUT", "/api/v1/namespaces/kube-system/configmaps/s", "",
         "update configmaps kube-system/s"),
        ("PATCH", "/apis/apps/v1/namespaces/kube-system/deployments/k", APPLY,
         "apply deployments kube-system/k"),
        ("DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/r", "",
         "delete roles kube-system/r"),
    ],
)  # fmt: skip
def test_call_of_a_request(method: str, path: str, ctype: str, expected: str) -> None:
    request = httpx2.Request(method, f"{SERVER}{path}", headers={"content-type": ctype})
    assert describe(call_of(request)) == expected


# --- the waits and the record ---------------------------------------------------------------


def test_a_wait_counts_an_outage_as_not_yet() -> None:
    answers: Iterator[bool | Exception] = iter(
        [UnreachableError("cannot reach the API server"), False, True]
    )

    def check() -> bool:
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got

    assert leases.wait_until("x", check, timeout=5, interval=0) >= 0


def test_a_wait_that_times_out_in_an_outage_says_so_in_one_line() -> None:
    def check() -> bool:
        raise UnreachableError("cannot reach the API server at s: connection refused")

    with pytest.raises(KubehoistError) as info:
        leases.wait_until("the lease", check, timeout=0.05, interval=0.01)
    assert info.value.message == (
        "timed out after 0s waiting for the lease "
        "(last: cannot reach the API server at s: connection refused)"
    )


def test_a_wait_does_not_hide_a_real_refusal() -> None:
    def check() -> bool:
        raise kube.ForbiddenError(
            "forbidden", status=kube.errors.ServerStatus(code=403, reason="", message="")
        )

    with pytest.raises(kube.ForbiddenError):
        leases.wait_until("x", check, timeout=5, interval=0)


def test_requests_in_a_wait_are_retried_only_until_its_deadline(tmp_path: Path) -> None:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config", server=SERVER))

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    client = kube.session(where, retry_for_s=600, transport=httpx2.MockTransport(refuse))
    start = time.monotonic()
    with pytest.raises(KubehoistError, match="timed out after 1s waiting for the lease"):
        leases.wait_until(
            "the lease",
            lambda: bool(leases.read_lease(client, namespace="kube-system", name="l").holder),
            timeout=1.0,
        )
    assert time.monotonic() - start < 3.0  # not the client's 600 s


@dataclass
class RecordServer:
    """The pivot record's ConfigMap on a server whose answer to the first update is lost
    (the update itself done, or not, as `applies` says)."""

    applies: bool
    cm: dict[str, Any] = field(default_factory=dict)
    puts: int = 0

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(200, json=self.cm)
        body = json.loads(request.content)
        if body["metadata"].get("resourceVersion") != self.cm["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", "the object has been modified")
        self.puts += 1
        if self.puts > 1 or self.applies:
            body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
            self.cm = body
        if self.puts == 1:
            raise httpx2.ReadError("Connection reset by peer", request=request)
        return httpx2.Response(200, json=self.cm)


@pytest.mark.parametrize("applies", [True, False])
def test_a_record_write_whose_answer_was_lost_is_read_back(tmp_path: Path, applies: bool) -> None:
    old = statemod.PivotState(component="kube-controller-manager", resource_version="10")
    server = RecordServer(
        applies=applies,
        cm={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": statemod.configmap_name(old.component),
                         "namespace": "kube-system", "resourceVersion": "10"},
            "data": old.to_data(),
        },
    )  # fmt: skip
    client, _ = _session(tmp_path, server.handler, Clock(), budget=5.0)
    new = statemod.save(client, old.with_done("preflight"))
    assert new.resource_version == "11"
    got = statemod.load(client, old.component)
    assert got is not None
    assert (got.done, got.resource_version) == (("preflight",), "11")
    assert server.puts == (1 if applies else 2)


# --- guard install's wait ------------------------------------------------------------------


@dataclass
class GuardCluster:
    """Guard pods and the guards' Lease, behind an API server away for the first
    `away` reads."""

    away: int
    reads: int = 0

    def _read(self) -> None:
        self.reads += 1
        if self.reads <= self.away:
            raise UnreachableError("cannot reach the API server at s: connection refused")

    def list(self, *_: Any, **__: Any) -> list[Pod]:
        self._read()
        return [
            Pod.from_dict(
                {
                    "metadata": {"name": "kubehoist-guard-kube-controller-manager-cp-1"},
                    "spec": {"nodeName": "cp-1", "containers": []},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
        ]

    def get(self, *_: Any, **__: Any) -> Lease:
        self._read()
        return Lease.from_dict({"metadata": {"name": "g"}, "spec": {"holderIdentity": "cp-1_x"}})


def test_guard_install_waits_through_an_outage() -> None:
    from kubehoist.components import by_name
    from kubehoist.guard.install import wait_installed

    comp = by_name("kube-controller-manager")
    assert comp is not None
    cluster = GuardCluster(away=3)
    said = wait_installed(cluster, comp, ["cp-1"], server="s", timeout_s=10)  # type: ignore[arg-type]
    assert "held by cp-1_x" in said
    assert cluster.reads == 5  # three lost, then the pods and the Lease


def test_guard_install_wait_ends_in_one_line_when_the_outage_outlasts_it() -> None:
    from kubehoist.components import by_name
    from kubehoist.guard.install import wait_installed

    comp = by_name("kube-controller-manager")
    assert comp is not None
    with pytest.raises(KubehoistError) as info:
        wait_installed(GuardCluster(away=10**6), comp, ["cp-1"], server="s", timeout_s=0.6)  # type: ignore[arg-type]
    assert info.value.message.startswith(
        "timed out after 1s: cannot reach the API server at s: connection refused"
    )


def test_cleanup_selects_every_helper_pod_and_never_the_components() -> None:
    from kubehoist.constants import selector_labels
    from kubehoist.nodefiles import helperpod

    pod = helperpod.helper_pod(
        node="cp-1", script="true", image="busybox", component="kube-controller-manager",
        run="abc123", namespace="kube-system",
    )  # fmt: skip
    assert pod.metadata is not None and pod.metadata.labels is not None
    wanted = helperpod.selector("kube-controller-manager")
    assert wanted.items() <= pod.metadata.labels.items()
    assert not selector_labels("kube-controller-manager").items() <= wanted.items()


class _BrokenBody(httpx2.SyncByteStream):
    """A body cut off after its first bytes (the connection reset mid-answer)."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"kind": "Lease", '
        raise httpx2.ReadError("Connection reset by peer")


def test_a_read_cut_off_in_the_middle_of_its_body_is_sent_again(tmp_path: Path) -> None:
    clock = Clock()
    answers = iter([httpx2.Response(200, stream=_BrokenBody())])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return next(answers, None) or httpx2.Response(200, json=lease())

    client, log = _session(tmp_path, handler, clock, budget=10.0)
    got = client.get(Lease, "kube-controller-manager", namespace="kube-system")
    assert got.metadata is not None and got.metadata.name == "kube-controller-manager"
    assert log.count == 2 and len(clock.slept) == 1


# --- an API server that has just come back ---------------------------------------------------


def test_a_refusal_right_after_the_server_came_back_is_taken_for_settling(tmp_path: Path) -> None:
    clock = Clock()
    answers: Iterator[httpx2.Response | None] = iter(
        [
            None,  # refused: the server is away
            _status(403, "Forbidden", 'leases is forbidden: User "kubernetes-admin" cannot get'),
            _status(404, "NotFound", 'leases "kube-controller-manager" not found'),
        ]
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        got = next(answers, "done")
        if got is None:
            raise httpx2.ConnectError("[SSL: UNEXPECTED_EOF_WHILE_READING]", request=request)
        return _lease_answer(request) if got == "done" else got  # type: ignore[return-value]

    client, log = _session(tmp_path, handler, clock, budget=60.0)
    got = client.get(Lease, "kube-controller-manager", namespace="kube-system")
    assert got.metadata is not None
    assert [r.status for r in log.records] == [None, 403, 404, 200]


def test_a_refusal_from_a_server_that_was_not_away_is_its_answer(tmp_path: Path) -> None:
    clock = Clock()
    client, log = _session(tmp_path, lambda r: _status(403, "Forbidden", "no"), clock, budget=60.0)
    with pytest.raises(kube.ForbiddenError):
        client.get(Lease, "kube-controller-manager", namespace="kube-system")
    assert log.count == 1 and clock.slept == []


def test_settling_lasts_a_few_seconds_only(tmp_path: Path) -> None:
    clock = Clock()
    answers = iter([None])

    def handler(request: httpx2.Request) -> httpx2.Response:
        if next(answers, "x") is None:
            raise httpx2.ConnectError("refused", request=request)
        return _status(404, "NotFound", 'leases "x" not found')

    client, log = _session(tmp_path, handler, clock, budget=60.0)
    with pytest.raises(NotFoundError):
        client.get(Lease, "x", namespace="kube-system")
    assert retry.SETTLE_S <= sum(clock.slept) < retry.SETTLE_S + 4.0 * 1.3
    clock.now += retry.SETTLE_S
    before = log.count
    assert get_or_none(client, Lease, "x", namespace="kube-system") is None
    assert log.count == before + 1  # long after the outage a 404 is believed at once


def test_a_record_write_that_never_left_fails_within_the_budget(tmp_path: Path) -> None:
    clock = Clock()
    seen: list[str] = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.method)
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    client, _ = _session(tmp_path, refuse, clock, budget=20.0)
    old = statemod.PivotState(component="kube-controller-manager", resource_version="10")
    with pytest.raises(UnreachableError) as info:
        statemod.save(client, old.with_done("preflight"))
    assert not info.value.maybe_sent
    assert set(seen) == {"PUT"}  # no read-back: the write never left
    assert sum(clock.slept) == pytest.approx(20.0)


def test_a_helper_pods_create_whose_answer_was_lost_is_sent_again_once_done() -> None:
    """The connection breaks after the create left (it may have been done): the create
    is sent again; "already exists" then means the lost one was done. A refusal is
    not retried past the run's deadline."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Pod

    from kubehoist.kube.errors import ConflictError, ServerStatus, UnreachableError
    from kubehoist.nodefiles import helperpod

    class Flaky:
        def __init__(self, answers: list[BaseException | None]) -> None:
            self.answers, self.calls = answers, 0

        def create(self, obj: object) -> object:
            self.calls += 1
            answer = self.answers.pop(0)
            if answer is not None:
                raise answer
            return obj

    pod = Pod(metadata=ObjectMeta(name="kubehoist-abc123-cp-1", namespace="kube-system"))
    lost = UnreachableError("the connection was closed by the server", maybe_sent=True)
    exists = ConflictError(
        "exists", status=ServerStatus(code=409, reason="AlreadyExists", message="")
    )
    client = Flaky([lost, exists])
    name = helperpod._create(client, pod, deadline=time.monotonic() + 5)  # type: ignore[arg-type]
    assert (name, client.calls) == ("kubehoist-abc123-cp-1", 2)
    refused = UnreachableError("connection refused", maybe_sent=False)
    client = Flaky([refused] * 100)
    started = time.monotonic()
    with pytest.raises(UnreachableError):
        helperpod._create(client, pod, deadline=time.monotonic() + 1.2)  # type: ignore[arg-type]
    assert 1.0 <= time.monotonic() - started < 3.0
    forbidden = ConflictError("x", status=ServerStatus(code=403, reason="Forbidden", message=""))
    with pytest.raises(ConflictError):
        helperpod._create(Flaky([forbidden]), pod, deadline=time.monotonic() + 5)  # type: ignore[arg-type]


def test_an_untrusted_server_certificate_is_never_retried() -> None:
    import ssl

    from kubehoist.kube.retry import retry_error, untrusted

    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    exc = httpx2.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.__cause__ = cause
    assert untrusted(exc)
    assert not retry_error(exc, method="GET")
    refused = httpx2.ConnectError("[Errno 111] Connection refused")
    assert not untrusted(refused)
    assert retry_error(refused, method="GET")
