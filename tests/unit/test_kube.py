"""The kube layer against a faked transport: exact HTTP, bounded reads, error wording,
kubeconfig precedence, and the list-then-watch loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist import kube
from kubehoist.constants import field_selector, label_selector
from kubehoist.errors import KubehoistError
from kubehoist.kube import objects
from kubehoist.kube.config import load_config
from kubehoist.kube.errors import Call, ServerStatus, server_error, translate
from kubehoist.kube.reads import read_election
from kubehoist.kube.watch import (
    Backoff,
    Delete,
    Interrupted,
    Item,
    Source,
    Synced,
    Upsert,
    informer,
)
from tests.unit.kubefake import UUID_A, FakeCluster, lease, pod, write_kubeconfig

KCM = "kube-controller-manager"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
SCHED = "kube-scheduler"


def params(request: httpx2.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode()))


def api_for(handler: Callable[[httpx2.Request], httpx2.Response], tmp_path: Path) -> kube.Api:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))
    return kube.open_api(where, transport=httpx2.MockTransport(handler))


# --- requests ----------------------------------------------------------------------


def test_selectors_are_canonical() -> None:
    assert label_selector(within={"component": [SCHED, KCM]}) == (
        "component in (kube-controller-manager,kube-scheduler)"
    )
    assert label_selector(equals={"b": "2", "a": "1"}, within={"c": ["x"]}) == "a=1,b=2,c=x"


def test_candidate_selectors_cover_kubeadm_and_kubehoist_pods() -> None:
    assert objects.candidate_selectors([KCM, SCHED]) == (
        "component in (kube-controller-manager,kube-scheduler)",
        "app.kubernetes.io/managed-by=kubehoist,"
        "app.kubernetes.io/name in (kube-controller-manager,kube-scheduler)",
    )


def test_selectors_keep_their_terms_for_lightkube() -> None:
    """lightkube builds the query from the terms: the same text as the canonical one."""
    from lightkube.core.selector import build_selector

    sel = label_selector(equals={"a": "1"}, within={"c": ["y", "x"], "d": ["z"]})
    assert sel == "a=1,c in (x,y),d=z"
    assert build_selector(sel.pairs()) == sel
    fields = field_selector({"metadata.name": "kube-scheduler", "b": "2"})
    assert build_selector(fields.pairs(), for_fields=True) == fields


# --- reads: exact HTTP, bounded ------------------------------------------------------


def test_status_reads_are_four_requests_with_selectors(tmp_path: Path) -> None:
    fake = FakeCluster(
        leases=[lease(KCM), lease(SCHED, holder=f"cp-1_{UUID_A}")],
        pods=[
            pod("kube-controller-manager-cp-1", static=True),
            pod("kube-scheduler-cp-1", component=SCHED, static=True),
            pod("kcm-abc", node="w-1"),
            pod("kcm-own", node="w-2", kubehoist=True),
            pod("unrelated", component="etcd", static=True),
        ],
    )

    async def run() -> Any:
        async with api_for(fake.handler, tmp_path) as api:
            result = await read_election(
                api,
                namespace="kube-system",
                leases=[(KCM, "kube-system", KCM), (SCHED, "kube-system", SCHED)],
            )
            return result, api.log.count

    (found, cands), count = asyncio.run(run())
    assert count == 4
    seen = sorted((r.method, r.url.path, tuple(sorted(params(r).items()))) for r in fake.requests)
    assert seen == [
        (
            "GET",
            "/api/v1/namespaces/kube-system/pods",
            (
                ("labelSelector", "app.kubernetes.io/managed-by=kubehoist,"
                 "app.kubernetes.io/name in (kube-controller-manager,kube-scheduler)"),
                ("limit", "500"),
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/kube-system/pods",
            (
                ("labelSelector", "component in (kube-controller-manager,kube-scheduler)"),
                ("limit", "500"),
            ),
        ),
        ("GET", f"{LEASES}/kube-controller-manager", ()),
        ("GET", f"{LEASES}/kube-scheduler", ()),
    ]  # fmt: skip
    assert found[KCM] is not None and found[KCM].holder == f"cp-1_{UUID_A}"
    assert [c.name for c in cands[KCM]] == ["kube-controller-manager-cp-1", "kcm-abc", "kcm-own"]
    assert [c.name for c in cands[SCHED]] == ["kube-scheduler-cp-1"]
    assert cands[KCM][0].kind.value == "static" and cands[KCM][1].kind.value == "deployment"
    assert all(r.headers["authorization"] == "Bearer t0ken" for r in fake.requests)


def test_missing_lease_is_none_not_an_error(tmp_path: Path) -> None:
    fake = FakeCluster(pods=[pod("kube-controller-manager-cp-1", static=True)])

    async def run() -> Any:
        async with api_for(fake.handler, tmp_path) as api:
            return await read_election(
                api, namespace="kube-system", leases=[(KCM, "kube-system", KCM)]
            )

    found, _ = asyncio.run(run())
    assert found == {KCM: None}


def test_lists_follow_continue_tokens(tmp_path: Path) -> None:
    pages = {
        None: {"metadata": {"continue": "p2", "resourceVersion": "7"}, "items": [pod("a")]},
        "p2": {"metadata": {"resourceVersion": "7"}, "items": [pod("b")]},
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(params(request))
        return httpx2.Response(200, json=pages[params(request).get("continue")])

    async def run() -> Any:
        async with api_for(handler, tmp_path) as api:
            return await api.list(Pod, namespace="ns", chunk_size=1)

    result = asyncio.run(run())
    assert [i["metadata"]["name"] for i in result.items] == ["a", "b"]
    assert result.resource_version == "7"
    assert seen == [{"limit": "1"}, {"limit": "1", "continue": "p2"}]


# --- errors ------------------------------------------------------------------------


def test_forbidden_names_verb_resource_namespace_and_user(tmp_path: Path) -> None:
    fake = FakeCluster(forbid={"pods"})

    async def run() -> Any:
        async with api_for(fake.handler, tmp_path) as api:
            return await api.list(Pod, namespace="kube-system")

    with pytest.raises(kube.ForbiddenError) as info:
        asyncio.run(run())
    assert (
        info.value.message == 'forbidden: cannot list pods in namespace kube-system (user "jane")'
    )


def test_not_found_is_kubectl_worded() -> None:
    err = server_error(
        ServerStatus(code=404, reason="NotFound", message="x"),
        call=Call(verb="get", resource="leases", namespace="kube-system", name="x"),
    )
    assert (
        err.message == 'Error from server (NotFound): leases "x" not found in namespace kube-system'
    )


def test_unreachable_server(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    async def run() -> Any:
        async with api_for(handler, tmp_path) as api:
            return await api.get(Lease, namespace="a", name="b")

    with pytest.raises(kube.UnreachableError) as info:
        asyncio.run(run())
    assert info.value.message == (
        "cannot reach the API server at https://10.0.0.1:6443: connection refused"
    )


def test_translate_passes_bugs_through() -> None:
    with pytest.raises(ZeroDivisionError):
        translate(ZeroDivisionError(), call=Call(verb="get", resource="pods"), server="s")


def test_lightkube_client_errors_use_the_same_strategy(tmp_path: Path) -> None:
    from lightkube.resources.coordination_v1 import Lease

    fake = FakeCluster()
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))
    client = kube.connect(where, transport=fake.transport())
    call = Call(verb="get", resource="leases", namespace="kube-system", name=KCM)
    with pytest.raises(kube.NotFoundError), kube.api_errors(call, server=where.server):
        client.get(Lease, KCM, namespace="kube-system")
    assert where.log.count == 1


# --- kubeconfig --------------------------------------------------------------------


def _kc(path: Path, *, name: str, server: str, current: str | None = None, ca: str = "") -> Path:
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority"] = ca
    else:
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": name}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }
    if current:
        doc["current-context"] = current
    path.write_text(json.dumps(doc))
    return path


def test_kubeconfig_list_merges_first_wins(tmp_path: Path) -> None:
    a = _kc(tmp_path / "a", name="one", server="https://one", current="one")
    b = _kc(tmp_path / "b", name="two", server="https://two", current="two")
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{a}:{b}"}
    assert load_config(environ=env).cluster.server == "https://one"
    assert load_config(environ=env, context="two").cluster.server == "https://two"


def test_flag_beats_env(tmp_path: Path) -> None:
    a = _kc(tmp_path / "a", name="one", server="https://one", current="one")
    b = _kc(tmp_path / "b", name="two", server="https://two", current="two")
    assert load_config(kubeconfig=b, environ={"KUBECONFIG": str(a)}).cluster.server == (
        "https://two"
    )


def test_relative_paths_resolve_against_their_own_file(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    a = _kc(tmp_path / "a", name="one", server="https://one", current="one")
    b = _kc(sub / "b", name="two", server="https://two", ca="ca.crt")
    config = load_config(environ={"KUBECONFIG": f"{a}:{b}"}, context="two")
    assert config.cluster.certificate_auth == str(sub / "ca.crt")


def test_unknown_context_and_missing_file(tmp_path: Path) -> None:
    a = _kc(tmp_path / "a", name="one", server="https://one", current="one")
    with pytest.raises(KubehoistError, match='context "nope" does not exist'):
        load_config(kubeconfig=a, context="nope")
    with pytest.raises(KubehoistError, match="no such file"):
        load_config(kubeconfig=tmp_path / "nothing")


# --- list-then-watch ---------------------------------------------------------------


def _lines(*events: dict[str, Any]) -> httpx2.Response:
    body = "".join(json.dumps(e) + "\n" for e in events).encode()
    return httpx2.Response(200, content=body)


def test_informer_resumes_relists_on_410_and_after_a_failure_and_backs_off(
    tmp_path: Path,
) -> None:
    l100 = lease(KCM, rv="100")
    l101 = lease(KCM, rv="101", renew="2026-01-01T00:00:12.000000Z")
    l200 = lease(KCM, holder="other_" + UUID_A, rv="200", transitions=1)
    l201 = lease(KCM, holder="other_" + UUID_A, rv="201", transitions=1)
    gone = lease("kube-scheduler", rv="90")
    script: list[Callable[[httpx2.Request], httpx2.Response]] = [
        lambda r: httpx2.Response(
            200, json={"metadata": {"resourceVersion": "100"}, "items": [l100, gone]}
        ),
        lambda r: _lines(
            {"type": "MODIFIED", "object": l101},
            {"type": "MODIFIED", "object": l101},  # a duplicate: never reported twice
        ),  # the server ends the stream: resumed from 101
        lambda r: _lines(
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
        ),
        lambda r: httpx2.Response(
            200, json={"metadata": {"resourceVersion": "200"}, "items": [l200]}
        ),
        lambda r: (_ for _ in ()).throw(httpx2.ConnectError("Connection refused", request=r)),
        lambda r: httpx2.Response(
            200, json={"metadata": {"resourceVersion": "201"}, "items": [l201]}
        ),
    ]
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return script[len(sent) - 1](request)

    sleeps: list[float] = []

    async def no_sleep(s: float) -> None:
        sleeps.append(s)

    async def run() -> list[Item]:
        out: list[Item] = []
        async with api_for(handler, tmp_path) as api:
            source = Source(resource=Lease, namespace="kube-system")
            async for item in informer(
                api, source, backoff=Backoff(), sleep=no_sleep, rand=lambda: 0.5
            ):
                out.append(item)
                if len(sent) == len(script) and isinstance(item, Synced):
                    break
        return out

    items = asyncio.run(run())

    def show(item: Item) -> str:
        if isinstance(item, Upsert | Delete):
            meta = item.obj["metadata"]
            return f"{type(item).__name__}:{meta['name']}@{meta['resourceVersion']}"
        return type(item).__name__

    assert [show(i) for i in items] == [
        f"Upsert:{KCM}@100",
        "Upsert:kube-scheduler@90",
        "Synced",
        f"Upsert:{KCM}@101",
        "Delete:kube-scheduler@90",  # vanished while we were away: found by the relist
        f"Upsert:{KCM}@200",
        "Synced",
        "Interrupted",
        "Resumed",
        f"Upsert:{KCM}@201",
        "Synced",
    ]
    assert isinstance(items[7], Interrupted) and items[7].retry_in_s == 0.5
    assert isinstance(items[6], Synced) and items[6].relist
    assert sleeps == [0.5]
    rvs = [params(r).get("resourceVersion") for r in sent]
    watches = [params(r).get("watch") == "true" for r in sent]
    assert rvs == [None, "100", "101", None, "200", None]
    assert watches == [False, True, True, False, True, False]
    assert all(params(r)["timeoutSeconds"] == "290" for r in sent if params(r).get("watch"))


def test_informer_reopens_a_watch_that_hangs_from_its_resource_version(tmp_path: Path) -> None:
    """lightkube's watch has no read timeout: a stream that stays open and silent (a
    connection dead without a FIN) is closed after `resync_s` and opened again."""
    l5, l6 = lease(KCM, rv="5"), lease(KCM, rv="6", renew="2026-01-01T00:00:12.000000Z")

    async def silence() -> Any:
        yield b""
        await asyncio.Event().wait()

    script: list[Callable[[], httpx2.Response]] = [
        lambda: httpx2.Response(200, json={"metadata": {"resourceVersion": "5"}, "items": [l5]}),
        lambda: httpx2.Response(200, content=silence()),
        lambda: _lines({"type": "MODIFIED", "object": l6}),
    ]
    sent: list[httpx2.Request] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return script[len(sent) - 1]()

    async def run() -> list[str]:
        out: list[str] = []
        async with api_for(handler, tmp_path) as api:  # type: ignore[arg-type]
            source = Source(resource=Lease, namespace="kube-system")
            async for item in informer(api, source, resync_s=0.3):
                out.append(type(item).__name__)
                if isinstance(item, Upsert) and item.obj["metadata"]["resourceVersion"] == "6":
                    break
        return out

    assert asyncio.run(run()) == ["Upsert", "Synced", "Upsert"]
    assert [params(r).get("resourceVersion") for r in sent] == [None, "5", "5"]


def test_informer_raises_rbac_errors(tmp_path: Path) -> None:
    fake = FakeCluster(forbid={"leases"})

    async def run() -> None:
        async with api_for(fake.handler, tmp_path) as api:
            async for _ in informer(api, Source(resource=Lease, namespace="x")):
                pass

    with pytest.raises(kube.ForbiddenError, match="cannot list leases in namespace x"):
        asyncio.run(run())


def test_informer_retries_refusals_of_a_restarting_api_server(tmp_path: Path) -> None:
    refused = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": 'User "a" no'}
    l1 = lease(KCM, rv="1")
    l2 = lease(KCM, rv="2", renew="2026-01-01T00:00:12.000000Z")
    script = [
        httpx2.Response(200, json={"metadata": {"resourceVersion": "1"}, "items": [l1]}),
        httpx2.Response(403, json=refused),
        httpx2.Response(200, json={"metadata": {"resourceVersion": "2"}, "items": [l2]}),
    ]
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return script[len(sent) - 1]

    async def no_sleep(s: float) -> None:
        return None

    async def run() -> list[str]:
        out: list[str] = []
        async with api_for(handler, tmp_path) as api:
            source = Source(resource=Lease, namespace="kube-system")
            async for item in informer(api, source, sleep=no_sleep):
                out.append(type(item).__name__)
                if isinstance(item, Upsert) and item.obj["metadata"]["resourceVersion"] == "2":
                    break
        return out

    assert asyncio.run(run()) == ["Upsert", "Synced", "Interrupted", "Resumed", "Upsert"]


def test_one_readiness_rule_for_objects_and_dicts() -> None:
    """Pods and nodes, as lightkube objects or as dicts, by the same rule: Ready=True,
    since its lastTransitionTime."""
    from datetime import UTC, datetime

    from lightkube.models.core_v1 import NodeCondition, NodeStatus, PodCondition, PodStatus
    from lightkube.resources.core_v1 import Node, Pod

    from kubehoist.kube.objects import is_ready, ready_condition

    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    as_dict = {"status": {"conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"},
    ]}}  # fmt: skip
    pod = Pod(status=PodStatus(conditions=[
        PodCondition(type="PodScheduled", status="True"),
        PodCondition(type="Ready", status="True", lastTransitionTime=since),
    ]))  # fmt: skip
    node = Node(status=NodeStatus(conditions=[NodeCondition(type="Ready", status="False")]))
    assert ready_condition(as_dict) == ready_condition(pod) == (True, since)
    assert ready_condition(node) == (False, None)
    assert not is_ready({"status": {}}) and not is_ready(Pod()) and not is_ready({})
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert ready_condition(not_ready) == (False, None)


def test_informer_raises_when_the_server_was_never_reached(tmp_path: Path) -> None:
    """A first LIST that finds no server is a wrong server or CA, not an outage."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    async def run() -> None:
        async with api_for(handler, tmp_path) as api:
            async for _ in informer(api, Source(resource=Lease, namespace="x")):
                pass

    with pytest.raises(kube.UnreachableError, match="connection refused"):
        asyncio.run(run())


def test_a_slow_consumer_is_never_cancelled_by_the_watch_bound(tmp_path: Path) -> None:
    """The bound on a watch covers the waits for the next event, not the consumer's
    own awaits between two items (a timeout across a yield would cancel them)."""
    l5 = lease(KCM, rv="5")
    l6 = lease(KCM, rv="6", renew="2026-01-01T00:00:12.000000Z")
    l7 = lease(KCM, rv="7", renew="2026-01-01T00:00:14.000000Z")

    async def then_silence(*events: dict[str, Any]) -> Any:
        for event in events:
            yield (json.dumps(event) + "\n").encode()
        await asyncio.Event().wait()

    script: list[Callable[[], httpx2.Response]] = [
        lambda: httpx2.Response(200, json={"metadata": {"resourceVersion": "5"}, "items": [l5]}),
        lambda: httpx2.Response(200, content=then_silence({"type": "MODIFIED", "object": l6})),
        lambda: httpx2.Response(200, content=then_silence({"type": "MODIFIED", "object": l7})),
    ]
    sent: list[httpx2.Request] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return script[len(sent) - 1]()

    async def run() -> list[str]:
        out: list[str] = []
        async with api_for(handler, tmp_path) as api:  # type: ignore[arg-type]
            source = Source(resource=Lease, namespace="kube-system")
            async for item in informer(api, source, resync_s=0.2):
                out.append(type(item).__name__)
                if isinstance(item, Upsert):
                    version = item.obj["metadata"]["resourceVersion"]
                    if version == "7":
                        break
                    await asyncio.sleep(0.5)  # longer than the bound, between two items
        return out

    assert asyncio.run(run()) == ["Upsert", "Synced", "Upsert", "Upsert"]
    assert [params(r).get("resourceVersion") for r in sent] == [None, "5", "6"]
