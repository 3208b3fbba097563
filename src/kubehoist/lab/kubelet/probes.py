"""Running one probe attempt (HTTP/HTTPS GET, TCP, exec) from inside the pod's network
namespace, and the threshold bookkeeping that turns attempts into a verdict.

HTTPS is not verified, as the kubelet does not verify it; a status from 200 to 399 is
success. Exec probes run the command in the container's namespaces through
`nsenter`. gRPC probes are not supported and always fail with a message saying so.
`ProbeTracker` is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from kubehoist.lab.kubelet.network import connect_in_netns
from kubehoist.lab.kubelet.podspec import Probe

USER_AGENT = "kube-probe/1.36"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class ProbeTarget:
    """Where a container's probes go."""

    netns: str  # path of the network namespace to probe from
    pod_ip: str
    pid: int | None  # the container's PID 1 (host PID), for exec probes
    env: Mapping[str, str]


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_request(probe: Probe, host: str, port: int) -> bytes:
    """The exact bytes of the probe's GET request."""
    headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*"}
    for name, value in probe.headers:
        headers[name] = value
    headers["Connection"] = "close"
    path = probe.path if probe.path.startswith("/") else "/" + probe.path
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def parse_status_line(line: bytes) -> int:
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"malformed HTTP response {line[:80]!r}")
    return int(parts[1])


async def _http(probe: Probe, target: ProbeTarget, port: int) -> ProbeResult:
    host = probe.host or target.pod_ip
    sock = await connect_in_netns(target.netns, host, port)
    ctx = _insecure_context() if probe.scheme == "HTTPS" else None
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=ctx, server_hostname=host if ctx else None
    )
    try:
        writer.write(http_request(probe, host, port))
        await writer.drain()
        code = parse_status_line(await reader.readline())
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    url = f"{probe.scheme.lower()}://{host}:{port}{probe.path}"
    if 200 <= code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {code} ({url})")


async def _tcp(probe: Probe, target: ProbeTarget, port: int) -> ProbeResult:
    sock = await connect_in_netns(target.netns, probe.host or target.pod_ip, port)
    sock.close()
    return ProbeResult(True)


async def _exec(probe: Probe, target: ProbeTarget) -> ProbeResult:
    if target.pid is None:
        return ProbeResult(False, "container is not running")
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(target.pid),
        "-m",
        "-u",
        "-i",
        "-n",
        "-p",
        "--",
        *probe.command,
        env=dict(target.env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
        raise
    if proc.returncode == 0:
        return ProbeResult(True)
    text = out.decode(errors="replace").strip()[-300:]
    return ProbeResult(
        False,
        f"command {list(probe.command)} exited with {proc.returncode}"
        + (f": {text}" if text else ""),
    )


async def run_probe(probe: Probe, target: ProbeTarget, port: int) -> ProbeResult:
    """One attempt, bounded by the probe's timeout. `port` is already resolved."""
    try:
        async with asyncio.timeout(probe.timeout):
            if probe.kind == "http":
                return await _http(probe, target, port)
            if probe.kind == "tcp":
                return await _tcp(probe, target, port)
            if probe.kind == "exec":
                return await _exec(probe, target)
            return ProbeResult(False, f"{probe.kind} probes are not supported by the lab kubelet")
    except TimeoutError:
        return ProbeResult(False, f"probe timed out after {probe.timeout:g}s")
    except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return ProbeResult(False, f"probe failed: {exc}")


@dataclass
class ProbeTracker:
    """Consecutive successes and failures against a probe's thresholds."""

    success_threshold: int
    failure_threshold: int
    verdict: bool | None = None  # None until a threshold is first reached
    _successes: int = 0
    _failures: int = 0

    def record(self, ok: bool) -> bool | None:
        """Add one result; return the verdict if it changed, else None."""
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= self.success_threshold and self.verdict is not True:
                self.verdict = True
                return True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self.failure_threshold and self.verdict is not False:
                self.verdict = False
                return False
        return None
