"""The lab's control-plane endpoint: a TCP load balancer in front of every control
plane's API server (`Balancer`), listening at the LAN gateway and at the host's port.

It listens in one network namespace and connects in another; bytes pass through
unchanged, so TLS is end to end between the client and the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from kubehoist.lab import netns as nsutil

log = logging.getLogger(__name__)


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


# --- the control-plane endpoint: a load balancer in front of the API servers -----------


def readyz_check(netns: str | None, host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an API server answers `GET /readyz` with 200, checked as kubeadm's HA
    guide has haproxy check it (`option httpchk GET /healthz`, `check-ssl verify none`):
    TLS without verifying the server, anonymous (system:public-info-viewer may read it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        raw = nsutil.socket_in(netns)
        raw.settimeout(timeout)
        with raw:
            raw.connect((host, port))
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(f"GET /readyz HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
                status = tls.recv(64).split(b"\r\n", 1)[0].split()
    except (OSError, ValueError):
        return False
    return len(status) >= 2 and status[1] == b"200"


HealthCheck = Callable[[str | None, str, int], bool]


@dataclass
class Balancer:
    """A TCP load balancer: each client connection goes to the first backend, in
    round-robin order, that accepts it; backends that pass the health check come
    before those that do not (so a starting or stopped API server is skipped while
    another one serves), and one that refuses or does not connect in time is skipped.
    With no backend healthy every one is still tried: the first API server of a new
    cluster serves before it is ready. It stands for haproxy (with keepalived's
    address) in front of a real cluster's API servers."""

    target_netns: str | None
    backends: tuple[tuple[str, int], ...]
    check: HealthCheck = readyz_check
    check_every: float = 2.0
    connect_timeout: float = 3.0
    healthy: dict[tuple[str, int], bool] = field(default_factory=dict)
    _next: int = 0

    def order(self) -> list[tuple[str, int]]:
        """The backends in the order a new connection tries them."""
        n = len(self.backends)
        start, self._next = self._next % n, self._next + 1
        ring = [self.backends[(start + i) % n] for i in range(n)]
        return [b for b in ring if self.healthy.get(b)] + [
            b for b in ring if not self.healthy.get(b)
        ]

    async def check_forever(self) -> None:
        """Run the health checks every `check_every` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(None, self.check, self.target_netns, host, port)
                    for host, port in self.backends
                )
            )
            for backend, ok in zip(self.backends, results, strict=True):
                if self.healthy.get(backend) != ok:
                    log.info("balancer: %s:%d %s", *backend, "up" if ok else "down")
                self.healthy[backend] = ok
            await asyncio.sleep(self.check_every)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for host, port in self.order():
            sock = await loop.run_in_executor(None, nsutil.socket_in, self.target_netns)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (host, port)), timeout=self.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                sock.close()
                errors.append(f"{host}:{port}: {exc!r}")
                continue
            except BaseException:
                sock.close()
                raise
            return await asyncio.open_connection(sock=sock)
        raise OSError(f"no backend accepted: {'; '.join(errors)}")

    async def serve(self, listen_netns: str | None, host: str, port: int) -> asyncio.Server:
        """Listen at host:port in `listen_netns`; the returned server runs until closed."""

        async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
            try:
                t_reader, t_writer = await self._connect()
            except OSError as exc:
                log.debug("balancer %s:%d: %s", host, port, exc)
                c_writer.close()
                return
            try:
                await asyncio.gather(_pipe(c_reader, t_writer), _pipe(t_reader, c_writer))
            finally:
                for w in (c_writer, t_writer):
                    w.close()

        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, nsutil.socket_in, listen_netns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        return await asyncio.start_server(handle, sock=sock)
