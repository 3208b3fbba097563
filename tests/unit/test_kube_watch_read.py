"""A WATCH that asked the server to end it gets a read timeout: a dead connection fails.

The silent server here is a real socket: it answers a WATCH's headers and then sends
nothing, as an API server does behind a load balancer once its node dropped off the
network. Closing the client from another thread does not wake a read blocked on such
a socket (measured below), which is why the bound is a read timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Pod

from kubehoist.kube import transport
from kubehoist.kube.transport import CountingTransport, RequestLog, bound_watch_read


def request(url: str, **timeout: float | None) -> httpx2.Request:
    req = httpx2.Request("GET", url)
    if timeout:
        req.extensions["timeout"] = dict(timeout)
    return req


def test_only_a_watch_with_a_server_timeout_gets_a_read_bound() -> None:
    base = "https://api:6443/api/v1/namespaces/kube-system/pods"
    watch = request(f"{base}?timeoutSeconds=20&watch=true", connect=10.0, read=None)
    bound_watch_read(watch)
    assert watch.extensions["timeout"] == {
        "connect": 10.0,
        "read": 20.0 + transport.WATCH_READ_GRACE_S,
    }
    for url in (
        f"{base}?watch=true",  # no server timeout: nothing to bound it by
        f"{base}?timeoutSeconds=20",  # a LIST keeps the client's own timeouts
        f"{base}?timeoutSeconds=0&watch=true",
        f"{base}?timeoutSeconds=x&watch=true",
    ):
        other = request(url, read=None)
        bound_watch_read(other)
        assert other.extensions["timeout"] == {"read": None}, url
    chosen = request(f"{base}?timeoutSeconds=20&watch=true", read=3.0)
    bound_watch_read(chosen)
    assert chosen.extensions["timeout"] == {"read": 3.0}  # a read timeout set is kept


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Answers each request with the headers of a chunked 200, then nothing, forever."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for conn in held:
        conn.close()


def client_for(port: int) -> Client:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    return Client(
        config, trust_env=False, transport=CountingTransport(httpx2.HTTPTransport(), RequestLog())
    )


def test_a_watch_on_a_dead_connection_fails_within_its_bound(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "WATCH_READ_GRACE_S", 0.5)
    client = client_for(silent_server)
    start = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout):
        for _ in client.watch(Pod, namespace="kube-system", server_timeout=1):
            pass
    assert 1.4 <= time.monotonic() - start < 5.0


def test_closing_the_client_does_not_wake_a_blocked_watch(silent_server: int) -> None:
    # Without a server timeout there is no read bound: the watch stays blocked even
    # after its client is closed from another thread.
    client = client_for(silent_server)
    ended = threading.Event()

    def watch() -> None:
        try:
            for _ in client.watch(Pod, namespace="kube-system"):
                pass
        except Exception:
            pass
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(0.5)
    client._client._client.close()  # what guard/podcache's `_close` does
    assert not ended.wait(2.0)
