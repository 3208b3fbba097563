"""`watch` reports what the guards did (their Events), and goes on without them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

import kubehoist.kube.client as kube_client
from kubehoist.cli import cli
from kubehoist.kube.objects import GuardEvent
from kubehoist.timeline import Timeline
from tests.unit.kubefake import FakeCluster, event, lease, pod, write_kubeconfig

KCM = "kube-controller-manager"
W = datetime(2026, 1, 1, tzinfo=UTC)


def guard_event(name: str, reason: str = "GuardReap", count: int = 1) -> GuardEvent:
    return GuardEvent(
        component=KCM,
        name=name,
        reason=reason,
        message="the holder is dead",
        type="Warning",
        node="cp-2",
        time=W,
        count=count,
    )


def test_an_action_is_reported_once_and_history_not_at_all() -> None:
    tl = Timeline([KCM])
    assert tl.guard_event_seen(guard_event("old"), now=0.0, wall=W) == []  # listed: history
    tl.start(now=0.0, wall=W)
    assert tl.guard_event_seen(guard_event("old"), now=1.0, wall=W) == []
    [action] = tl.guard_event_seen(guard_event("new", "GuardFallback"), now=2.0, wall=W)
    assert action.kind == "guard_action"
    assert action.to_json(origin=0.0) | {"time": None} == {
        "event": "guard_action",
        "time": None,
        "t": 2.0,
        "component": KCM,
        "action": "Fallback",
        "reason": "GuardFallback",
        "node": "cp-2",
        "message": "the holder is dead",
        "event_time": "2026-01-01T00:00:00Z",
    }
    assert tl.guard_event_seen(guard_event("new", "GuardFallback"), now=3.0, wall=W) == []
    again = tl.guard_event_seen(guard_event("new", "GuardFallback", count=2), now=4.0, wall=W)
    assert [e.kind for e in again] == ["guard_action"]
    other = replace(guard_event("x"), component="etcd")
    assert tl.guard_event_seen(other, now=5.0, wall=W) == []


def watch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeCluster) -> list[Any]:
    """`watch kcm -o jsonl` for 1.5 s; every Events watch delivers one new guard Event."""
    added = event("GuardHandBack", "Ready replicas: parked again", node="cp-3", name="kcm.g.2")

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if "watch=true" not in str(request.url) or "/events" in fake.forbid:
            return fake.handler(request)
        await asyncio.sleep(0.2)
        if request.url.path.endswith("/events") and not added.get("_sent"):
            added["_sent"] = True
            body = {k: v for k, v in added.items() if k != "_sent"}
            body["metadata"] = {**body["metadata"], "resourceVersion": "501"}
            line = json.dumps({"type": "ADDED", "object": body}) + "\n"
            return httpx2.Response(200, content=line.encode())
        return httpx2.Response(200, content=b"")

    monkeypatch.setattr(
        kube_client, "async_tls_transport", lambda config: httpx2.MockTransport(handler)
    )
    config = write_kubeconfig(tmp_path / "config")
    result = CliRunner().invoke(
        cli, ["watch", "kcm", "-o", "jsonl", "--for", "1.5", "--kubeconfig", str(config)]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def cluster() -> FakeCluster:
    return FakeCluster(
        leases=[lease(KCM, rv="100")],
        pods=[pod("kube-controller-manager-cp-1", static=True), pod("kcm-abc", node="w-1")],
        events=[event("GuardFallback", name="kcm.g.1")],
    )


def test_watch_jsonl_carries_guard_actions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    events = watch(monkeypatch, tmp_path, cluster())
    assert [e["event"] for e in events] == ["observing", "guard_action"]
    action = events[1]
    assert (action["component"], action["action"], action["node"]) == (KCM, "HandBack", "cp-3")
    assert action["message"] == "Ready replicas: parked again"


def test_watch_without_rights_on_events_says_so_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = cluster()
    fake.forbid.add("events")
    events = watch(monkeypatch, tmp_path, fake)
    assert [e["event"] for e in events] == ["observing", "stream_unavailable"]
    assert events[1]["resource"] == "events"
    assert "forbidden" in events[1]["error"]
