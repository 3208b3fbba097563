"""The control-plane endpoint's load balancer, on the host's loopback: connections go
to a backend that accepts them, healthy backends first, in turn."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kubehoist.lab.forward import Balancer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _named_server(name: bytes) -> tuple[asyncio.Server, int]:
    """A backend that answers every connection with its name."""

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(name)
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def test_a_refusing_backend_is_skipped_and_healthy_ones_come_first() -> None:
    async def main() -> None:
        a, port_a = await _named_server(b"a")
        b, port_b = await _named_server(b"b")
        dead = ("127.0.0.1", _free_port())  # nothing listens: connections are refused
        backends = (dead, ("127.0.0.1", port_a), ("127.0.0.1", port_b))
        lb = Balancer(None, backends, check=lambda _ns, _h, _p: False)
        listen = _free_port()
        server = await lb.serve(None, "127.0.0.1", listen)
        try:
            # none healthy: every backend is tried in turn, the refusing one skipped
            answers = [await _ask(listen) for _ in range(6)]
            assert set(answers) == {b"a", b"b"}
            # b healthy, a not: b serves every connection
            lb.healthy = {("127.0.0.1", port_b): True}
            assert {await _ask(listen) for _ in range(4)} == {b"b"}
            # b gone (refuses) though still marked healthy: a serves
            b.close()
            await b.wait_closed()
            assert {await _ask(listen) for _ in range(3)} == {b"a"}
            # nothing accepts: the client's connection is closed without a byte
            a.close()
            await a.wait_closed()
            assert await _ask(listen) == b""
        finally:
            server.close()

    asyncio.run(main())


def test_health_checks_mark_backends_up_and_down() -> None:
    results = {("127.0.0.1", 1): True, ("127.0.0.1", 2): False}

    async def main() -> dict[tuple[str, int], bool]:
        lb = Balancer(
            None, tuple(results), check=lambda _ns, h, p: results[(h, p)], check_every=0.01
        )
        task = asyncio.create_task(lb.check_forever())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lb.order()[0] == ("127.0.0.1", 1)
        return dict(lb.healthy)

    assert asyncio.run(main()) == results
