"""Connections that go silent are left, on the real API server: the guard's pod watches,
and client-go with the HTTP/2 health check render gives the Deployment's pods.

The guard reaches the API through the cluster's endpoint. A load balancer pins each
connection to one API server; when that server's node drops off the network, nothing
closes the connection: no FIN, no reset, just silence, and a watch blocked reading it
would wait for good (closing the client from another thread does not wake it:
tests/unit/test_kube_watch_read.py). Here the proxy of tests/e2e/test_api_outage.py,
owned by the test, stands for that balancer: `silence()` black-holes every open
connection and serves new ones as before.

- quiet: each pod watch is ended by the server every `WATCH_TIMEOUT_S` and resumed from
  its version, with no new LIST (the real API server's watch cache still holds it);
- silenced: the watch fails on its read timeout and the selector is listed again
  through a new connection within `WATCH_TIMEOUT_S` + `WATCH_READ_GRACE_S` (30 s) of the
  silence, plus a margin of 15 s for a loaded machine (the LIST after it, which may
  itself meet a slow API server).

The same silence under the lab's kubectl, a client-go program, watching Leases: with
the environment render sets on the Deployment's container
(`render.mutators.HTTP2_HEALTH_ENV`) it reports "http2: client connection lost" within
the idle + ping seconds (8) plus the margin; with client-go's defaults (30 + 15) not
within 20 s. The second half is the control: it shows the variables are what acts.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubehoist import kube
from kubehoist.guard.podcache import WATCH_TIMEOUT_S, PodCache, wait_synced
from kubehoist.kube.transport import WATCH_READ_GRACE_S
from kubehoist.lab.binaries import locate
from kubehoist.render.mutators import HTTP2_HEALTH_ENV
from tests.e2e.conftest import LabHandle
from tests.e2e.test_api_outage import OutageProxy, proxy  # noqa: F401 (the fixture)

pytestmark = pytest.mark.lab

MARGIN_S = 10.0
LEAVE_MARGIN_S = 15.0


def until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_a_silent_watch_connection_is_left_and_the_pods_listed_again(
    lab: LabHandle,
    proxy: tuple[OutageProxy, Path],  # noqa: F811
) -> None:
    balancer, kubeconfig = proxy
    where = kube.target(kubeconfig=kubeconfig)
    cache = PodCache(
        lambda: kube.connect(where),
        namespace="kube-system",
        selectors=({"component": "kube-apiserver"},),
        retry_s=0.5,
    ).start()
    try:
        assert wait_synced(cache, 30), "the pod cache never listed the selector"
        first = cache.snapshot()
        assert first, "no kube-apiserver pod in kube-system"

        time.sleep(2 * WATCH_TIMEOUT_S + MARGIN_S)
        watches = [r for r in where.log.records if "watch=true" in r.query]
        assert len(watches) >= 3, [r.query for r in where.log.records]
        assert all(f"timeoutSeconds={WATCH_TIMEOUT_S}" in r.query for r in watches)
        assert cache.lists == 1, "a quiet watch was listed again instead of resumed"
        assert cache.synced

        balancer.silence()
        silenced = time.monotonic()
        bound = WATCH_TIMEOUT_S + WATCH_READ_GRACE_S + LEAVE_MARGIN_S
        assert until(lambda: cache.lists >= 2, bound), (
            f"the silenced watch was not left within {bound:.0f} s"
        )
        left_after = time.monotonic() - silenced
        assert wait_synced(cache, 10)
        again = cache.snapshot()
        assert again is not None
        assert {p["metadata"]["uid"] for p in again} == {p["metadata"]["uid"] for p in first}
        print(f"silenced watch left and listed again after {left_after:.1f} s")
    finally:
        cache.stop()


def _kubectl_watch_lost_after(
    lab: LabHandle, through: tuple[OutageProxy, Path], env: dict[str, str], wait_s: float
) -> float | None:
    """Seconds from the silence to kubectl's "connection lost", None if not within wait_s."""
    balancer, kubeconfig = through
    kubectl = locate(lab.spec.kubernetes_version).path("kubectl")
    proc = subprocess.Popen(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "-n", "kube-system", "get", "leases",
         "--watch", "--output-watch-events"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        assert until(lambda: any("ADDED" in line for _, line in lines), 30), lines
        time.sleep(1.0)  # discovery done, the watch open
        balancer.silence()
        silenced = time.monotonic()

        def lost() -> bool:
            return any("connection lost" in line for _, line in lines)

        if not until(lost, wait_s):
            return None
        return next(t for t, line in lines if "connection lost" in line) - silenced
    finally:
        proc.kill()
        proc.wait()


def test_client_go_with_the_rendered_environment_leaves_a_silent_connection(
    lab: LabHandle,
    proxy: tuple[OutageProxy, Path],  # noqa: F811
) -> None:
    env = dict(HTTP2_HEALTH_ENV)
    bound = float(env["HTTP2_READ_IDLE_TIMEOUT_SECONDS"]) + float(env["HTTP2_PING_TIMEOUT_SECONDS"])
    lost = _kubectl_watch_lost_after(lab, proxy, env, bound + MARGIN_S)
    assert lost is not None, f"kubectl did not leave the silent connection within {bound:.0f} s"
    print(f"with {env}: connection lost after {lost:.1f} s")


def test_client_go_with_its_defaults_stays_on_a_silent_connection(
    lab: LabHandle,
    proxy: tuple[OutageProxy, Path],  # noqa: F811
) -> None:
    unset = {k: "" for k, _ in HTTP2_HEALTH_ENV}  # empty: client-go's defaults (30 s + 15 s)
    lost = _kubectl_watch_lost_after(lab, proxy, unset, 20.0)
    assert lost is None, f"with client-go's defaults the connection was lost after {lost:.1f} s"
