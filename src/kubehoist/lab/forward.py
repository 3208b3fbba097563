"""TCP forwarders between network namespaces: the lab's control-plane endpoint (a
stand-in for a load balancer in front of the API servers) and the host's access to it.

A forwarder listens in one namespace and connects in another; bytes pass through
unchanged, so TLS is end to end between the client and the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

from kubehoist.lab import netns as nsutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forward:
    listen_netns: str | None  # None: the host's namespace
    listen_host: str
    listen_port: int
    target_netns: str | None
    target_host: str
    target_port: int

    def describe(self) -> str:
        return (
            f"{self.listen_netns or 'host'}:{self.listen_host}:{self.listen_port} -> "
            f"{self.target_netns or 'host'}:{self.target_host}:{self.target_port}"
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _connect(fwd: Forward) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, nsutil.socket_in, fwd.target_netns)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            loop.sock_connect(sock, (fwd.target_host, fwd.target_port)), timeout=5
        )
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def serve(fwd: Forward) -> asyncio.Server:
    """Start forwarding; the returned server runs until closed."""

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await _connect(fwd)
        except (OSError, TimeoutError) as exc:
            log.debug("forward %s: connect failed: %s", fwd.describe(), exc)
            c_writer.close()
            return
        try:
            await asyncio.gather(_pipe(c_reader, t_writer), _pipe(t_reader, c_writer))
        finally:
            for w in (c_writer, t_writer):
                w.close()

    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, nsutil.socket_in, fwd.listen_netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((fwd.listen_host, fwd.listen_port))
    sock.listen(128)
    sock.setblocking(False)
    return await asyncio.start_server(handle, sock=sock)
