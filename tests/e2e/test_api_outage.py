"""pivot and rollback while the API server goes away, in every phase.

kubehoist talks to the lab's API server through a TCP proxy owned by this test (a copy
of the admin kubeconfig whose server is the proxy); on command the proxy resets every
open connection and refuses (accepts, then resets) new ones for N seconds. The cluster
itself (kubelets, controller managers, the Deployment's pods) keeps its own way to the
API server, so what is tested is kubehoist alone meeting an API server that went away —
whatever runs the API server (a supervised process today, a kubeadm static pod tomorrow).

The outage starts when the run enters a phase: the test reads the run's phase lines
(`[i/n] <phase>: <summary>`, printed as each phase starts) as they come.

- a short outage (a few seconds, well under --timeout) in each phase: the run
  completes, exit 0, with the same result as without one;
- a long outage (longer than --timeout) in a phase: the run completes only if the
  phase's work got done and answered before its deadline (then the cluster is pivoted
  whole); otherwise one line `error: …`, non-zero exit,
  no traceback; before retire the pivot is rolled back (nothing was parked), after it
  rolled back automatically; a rollback is resumable (`kubehoist rollback` again
  completes). Either way the node files and kubehoist's kube-system objects end whole:
  the static pods back, byte for byte, nothing of kubehoist's left.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import LabHandle, kubehoist, node_files
from tests.e2e.test_pivot import COMPONENT, MANIFEST, holder, static_leads, wait_for

pytestmark = pytest.mark.lab

PIVOT_PHASES = ("preflight", "credentials", "deploy", "standby", "retire", "handover", "verify")
ROLLBACK_PHASES = ("restore", "static-ready", "handback", "cleanup")
TIMEOUT_S = 45
"""--timeout of every run here: long enough for the lab's standbys to become Ready."""
SHORT_S = 4.0
LONG_S = TIMEOUT_S + 15.0
PHASE_START = re.compile(r"^\[\d+/\d+\] ([a-z-]+): (.*)$")
PHASE_END = re.compile(r"\(\d+\.\d+s\)$")


# --- the proxy ------------------------------------------------------------------------------


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), waking a thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class OutageProxy:
    """127.0.0.1:<port> -> `upstream`, byte for byte (TLS passes through untouched),
    until `outage(seconds)`: every open connection reset, every new one reset at once
    (kubehoist's client sees a reset or an EOF in the TLS handshake, as when an API
    server restarts) until the outage ends; or `silence()`: see there."""

    upstream: tuple[str, int]
    down_until: float = 0.0
    refused: int = 0
    _listener: socket.socket = field(init=False)
    _open: set[socket.socket] = field(default_factory=set)
    _silent: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def __post_init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def outage(self, seconds: float) -> None:
        self.down_until = max(self.down_until, time.monotonic() + seconds)
        with self._lock:
            conns, self._open = list(self._open), set()
        for sock in conns:
            _reset(sock)

    def silence(self) -> None:
        """Every open connection goes silent, as one to an API server whose node dropped
        off the network: kept open, nothing forwarded either way, nothing closed. New
        connections are served as before (the balancer's other API servers)."""
        with self._lock:
            self._silent |= self._open
            self._open = set()

    def close(self) -> None:
        self._closed = True
        _reset(self._listener)
        self.outage(0)
        with self._lock:
            silent, self._silent = list(self._silent), set()
        for sock in silent:
            _reset(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if src not in self._silent:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {src, dst}
            _reset(src)
            _reset(dst)


@pytest.fixture
def proxy(lab: LabHandle, tmp_path: Path) -> Iterator[tuple[OutageProxy, Path]]:
    """The proxy in front of the lab's API server, and a kubeconfig that goes through it."""
    config = yaml.safe_load(lab.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, _, port = server.removeprefix("https://").rpartition(":")
    p = OutageProxy(upstream=(host.strip("[]"), int(port)))
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{p.port}"
    kubeconfig = tmp_path / "through-proxy.conf"
    kubeconfig.write_text(yaml.safe_dump(config))
    try:
        yield p, kubeconfig
    finally:
        p.close()


# --- a run, and outages at its phases --------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stderr: str
    refused: dict[str, int]
    """phase -> connections refused during the outage started at its start."""


def run_with_outages(
    proxy: OutageProxy, args: list[str], outages: dict[str, float], *, timeout: float = 900
) -> Run:
    """Run the CLI; when it enters a phase named in `outages`, the API server goes away
    for that many seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubehoist", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    refused: dict[str, int] = {}
    started: list[tuple[str, int]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = PHASE_START.match(line.rstrip("\n"))
            if not m or PHASE_END.search(line.rstrip()) or m.group(1) in refused:
                continue
            if m.group(1) in outages:
                refused[m.group(1)] = 0
                started.append((m.group(1), proxy.refused))
                proxy.outage(outages[m.group(1)])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    # Connections refused while each outage lasted (the next one's start ends a count).
    marks = [*started, ("", proxy.refused)]
    for (phase, at), (_, until) in itertools.pairwise(marks):
        refused[phase] = until - at
    return Run(returncode=proc.returncode, stderr="".join(lines), refused=refused)


def pivot_args(lab: LabHandle, kubeconfig: Path) -> list[str]:
    return [
        "pivot", "--kubeconfig", str(kubeconfig),
        "--host-root", str(lab.spec.api_node.root(lab.spec.root)),
        "--retry-period", "500ms", "--timeout", str(TIMEOUT_S),
    ]  # fmt: skip


def rollback_args(kubeconfig: Path) -> list[str]:
    return ["rollback", "--kubeconfig", str(kubeconfig), "--timeout", str(TIMEOUT_S)]


def kubehoist_objects(lab: LabHandle) -> str:
    return lab.kubectl(
        "get", "all,secrets,configmaps,pdb", "-n", "kube-system",
        "-l", "app.kubernetes.io/managed-by=kubehoist", "-o", "name",
    ).stdout.strip()  # fmt: skip


def one_line_error(run: Run) -> str:
    assert run.returncode != 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), run.stderr
    return last


def assert_static_again(lab: LabHandle, before: dict[str, bytes]) -> None:
    """The static pods lead again, the node files are as before, byte for byte, and
    nothing of kubehoist's is left in kube-system."""
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)
    assert node_files(lab.spec) == before
    assert kubehoist_objects(lab) == ""


def assert_pivoted(lab: LabHandle, before: dict[str, bytes]) -> None:
    """What a pivot without an outage gives: a Deployment pod leads, the manifest is
    parked byte for byte."""
    assert holder(lab).startswith(f"{COMPONENT}-"), holder(lab)
    cp = lab.spec.api_node.root(lab.spec.root) / "etc/kubernetes"
    manifest = str((cp / "manifests" / MANIFEST).relative_to(lab.spec.root))
    assert not (cp / "manifests" / MANIFEST).exists()
    assert (cp / "kubehoist/parked" / MANIFEST).read_bytes() == before[manifest]


@pytest.fixture
def settled(lab: LabHandle) -> Iterator[dict[str, bytes]]:
    """The static controller manager leads; its node files as they are then. Whatever
    a test leaves, it is rolled back after it (straight to the API server)."""
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)
    yield node_files(lab.spec)
    kubehoist("rollback", "--kubeconfig", str(lab.kubeconfig), "--timeout", "120", check=False)
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)


# --- the tests -------------------------------------------------------------------------------


def test_short_outages_in_every_phase_are_ridden_out(
    lab: LabHandle, proxy: tuple[OutageProxy, Path], settled: dict[str, bytes]
) -> None:
    p, kubeconfig = proxy
    run = run_with_outages(p, pivot_args(lab, kubeconfig), dict.fromkeys(PIVOT_PHASES, SHORT_S))
    assert run.returncode == 0, run.stderr
    assert "[7/7] verify:" in run.stderr, run.stderr
    assert set(run.refused) == set(PIVOT_PHASES), run.stderr
    # Each outage was met: kubehoist tried to connect while it lasted and was refused.
    assert all(n > 0 for n in run.refused.values()), run.refused
    assert_pivoted(lab, settled)

    run = run_with_outages(p, rollback_args(kubeconfig), dict.fromkeys(ROLLBACK_PHASES, SHORT_S))
    assert run.returncode == 0, run.stderr
    assert "runs from its static pods again" in run.stderr, run.stderr
    assert set(run.refused) == set(ROLLBACK_PHASES), run.stderr
    assert all(n > 0 for n in run.refused.values()), run.refused
    assert_static_again(lab, settled)


@pytest.mark.parametrize("phase", PIVOT_PHASES)
def test_a_long_outage_in_a_pivot_phase_rolls_back(
    lab: LabHandle, proxy: tuple[OutageProxy, Path], settled: dict[str, bytes], phase: str
) -> None:
    p, kubeconfig = proxy
    run = run_with_outages(p, pivot_args(lab, kubeconfig), {phase: LONG_S})
    if run.returncode == 0:
        # The phase's work was done on the node and its answer came through before its
        # deadline (a helper's result read from its log): the run completed. The
        # outage was met all the same, and the cluster is whole, pivoted; back again.
        assert run.refused.get(phase, 0) > 0, run.stderr
        assert "[7/7] verify:" in run.stderr, run.stderr
        assert_pivoted(lab, settled)
        while p.down():
            time.sleep(0.5)
        kubehoist(*rollback_args(kubeconfig))
        assert_static_again(lab, settled)
        return
    last = one_line_error(run)
    # the outage hit the run: connections refused, or the ones open reset when it began
    assert run.refused.get(phase, 0) > 0 or "cannot reach the API server" in last, run.stderr
    assert "cannot reach the API server" in last, run.stderr
    if f"pivot of {COMPONENT} failed and was rolled back" not in last:
        # The automatic rollback met the same outage: one line says to resume it, and
        # `kubehoist rollback` completes once the API server is back.
        assert "run `kubehoist rollback" in last, run.stderr
        while p.down():
            time.sleep(0.5)
        kubehoist(*rollback_args(kubeconfig))
    assert_static_again(lab, settled)


@pytest.mark.parametrize("phase", ROLLBACK_PHASES)
def test_a_long_outage_in_a_rollback_phase_is_resumable(
    lab: LabHandle, proxy: tuple[OutageProxy, Path], settled: dict[str, bytes], phase: str
) -> None:
    p, kubeconfig = proxy
    kubehoist(*pivot_args(lab, kubeconfig))
    assert_pivoted(lab, settled)
    run = run_with_outages(p, rollback_args(kubeconfig), {phase: LONG_S})
    last = one_line_error(run)
    # the outage hit the run: connections refused, or the ones open reset when it began
    assert run.refused.get(phase, 0) > 0 or "cannot reach the API server" in last, run.stderr
    assert "cannot reach the API server" in last, run.stderr
    while p.down():
        time.sleep(0.5)
    again = kubehoist(*rollback_args(kubeconfig))
    assert "runs from its static pods again" in again.stderr, again.stderr
    assert_static_again(lab, settled)
