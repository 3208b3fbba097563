"""The guard's pod watches leave a connection that went silent, on the real API server.

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
  silence, plus a margin of 10 s for a loaded machine (the LIST after it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubehoist import kube
from kubehoist.guard.podcache import WATCH_TIMEOUT_S, PodCache, wait_synced
from kubehoist.kube.transport import WATCH_READ_GRACE_S
from tests.e2e.conftest import LabHandle
from tests.e2e.test_api_outage import OutageProxy, proxy  # noqa: F401 (the fixture)

pytestmark = pytest.mark.lab

MARGIN_S = 10.0


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
        bound = WATCH_TIMEOUT_S + WATCH_READ_GRACE_S + MARGIN_S
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
