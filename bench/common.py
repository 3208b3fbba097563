"""What the lab benchmarks (bench/handover.py, bench/failover.py) share: the lab and the
CLI, waiting, watching the controller manager's Lease, scoring the reconcile probe, and
the summary table and raw numbers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.constants import selector_labels
from kubehoist.kube.objects import is_ready
from kubehoist.measure import Sample, baseline_of, outage_of

COMPONENT = "kube-controller-manager"
NAMESPACE = "kube-system"
NODE = "cp-1"  # the lab's control-plane node, where the static pod runs
LEASE_DURATION_S = 15.0  # the controller manager's default: pivot and the article keep it
WAIT_S = 180.0


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the lab and the CLI -------------------------------------------------------------------
@dataclass(frozen=True)
class Lab:
    root: Path
    port: int

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.conf"

    @property
    def node_root(self) -> Path:
        return self.root / "nodes" / NODE

    @property
    def manifest(self) -> Path:
        return self.node_root / "etc/kubernetes/manifests" / f"{COMPONENT}.yaml"


def kubehoist_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubehoist", *args]


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


@contextlib.contextmanager
def lab_up(
    lab: Lab,
    *,
    keep: bool,
    reuse: bool = False,
    workers: int = 2,
    control_planes: int = 1,
    kubernetes_version: str | None = None,
) -> Iterator[None]:
    """A fresh lab (`lab up --workers N --control-planes M`, 2 and 1 unless told, after
    a purge of whatever was at its root), or with `reuse` the one already up; purged and
    brought down at the end, also on failure, unless `keep`."""
    down = kubehoist_cmd("lab", "down", "--purge", "--root", str(lab.root))
    try:
        if not reuse:
            run(down, check=False)
            log(f"lab up at {lab.root} (port {lab.port})")
            run(
                kubehoist_cmd(
                    "lab",
                    "up",
                    "--root",
                    str(lab.root),
                    "--host-port",
                    str(lab.port),
                    "--workers",
                    str(workers),
                    "--control-planes",
                    str(control_planes),
                    *(("--kubernetes-version", kubernetes_version) if kubernetes_version else ()),
                )
            )
        yield
    finally:
        if not keep:
            log("lab down --purge")
            run(down, check=False)


@dataclass(frozen=True)
class Line:
    at: float
    text: str


async def run_streamed(cmd: Sequence[str], *, timeout: float = 600) -> tuple[int, list[Line]]:
    """Run a command; its stderr lines stamped with our clock on arrival."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[Line] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(Line(time.monotonic(), raw.decode(errors="replace").rstrip()))

    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, lines


def pivot_phases(code: int, lines: Sequence[Line]) -> dict[str, float]:
    """The phase times a `kubehoist pivot` printed; its last lines raised if it failed."""
    if code != 0:
        raise RuntimeError("pivot failed:\n" + "\n".join(x.text for x in lines[-15:]))
    phases: dict[str, float] = {}
    for line in lines:
        # "[5/7] retire: parked cp-1 (...) (1.2s)"
        if line.text.startswith("[") and line.text.endswith("s)") and ": " in line.text:
            phase = line.text.split("] ", 1)[1].split(":", 1)[0]
            with contextlib.suppress(ValueError):
                phases[phase] = float(line.text.rsplit("(", 1)[1].rstrip("s)"))
    return phases


# --- waiting -------------------------------------------------------------------------------
async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float = WAIT_S, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def deployment_pods(client: AsyncClient) -> list[Pod]:
    labels: dict[str, Any] = dict(selector_labels(COMPONENT))
    return [p async for p in client.list(Pod, namespace=NAMESPACE, labels=labels)]


def pod_ready(pod: Pod) -> bool:
    return is_ready(pod)


# --- what the watches saw ------------------------------------------------------------------
@dataclass(frozen=True)
class LeaseSeen:
    at: float
    name: str
    holder: str
    resource_version: str
    duration_s: float | None = None  # the record's leaseDurationSeconds


@dataclass(frozen=True)
class PodSeen:
    at: float
    kind: str  # ADDED, MODIFIED, DELETED
    name: str
    ready: bool
    terminated: bool  # every container terminated
    state: str  # the component's container: running, terminated, waiting or ""
    restarts: int  # the component's container's restart count
    deleting: bool


def container_state(pod: Pod) -> tuple[str, int]:
    """(state, restartCount) of the component's container."""
    for cs in (pod.status.containerStatuses if pod.status else None) or []:
        if cs.name != COMPONENT:
            continue
        st = cs.state
        state = ""
        if st is not None:
            state = next((k for k in ("running", "terminated", "waiting") if getattr(st, k)), "")
        return state, cs.restartCount or 0
    return "", 0


T = TypeVar("T")

LEASE_QUIET_S = 6.0
"""A Lease watch silent this long is opened again: a held Lease is renewed every retry
period (2 s), and a connection whose API server was cut off (no FIN: a partition, a
node's link down) would otherwise hang for good (lightkube's watch has no read
timeout). A silent Lease nobody renews costs one LIST each time, nothing more."""
PODS_QUIET_S = 30.0
"""The same bound for a watch of pods (quiet for long stretches in a settled lab)."""


async def quiet_bounded(stream: AsyncIterator[T], quiet_s: float) -> AsyncIterator[T]:
    """`stream`'s items; TimeoutError once it has been silent for `quiet_s` (the time a
    consumer takes between two items is not counted). The stream is closed at the end."""
    try:
        while True:
            try:
                async with asyncio.timeout(quiet_s):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


@dataclass
class Recorder:
    """Watches Leases and the component's pods in the namespace for the whole run; a
    benchmark's recorder says in `start` which, and adds what it asks of them."""

    client: AsyncClient
    leases: list[LeaseSeen] = field(default_factory=list)
    pods: list[PodSeen] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _start(self, *watches: Callable[[], Awaitable[None]]) -> None:
        """Run every watch (again after a failure) until `stop`; return once the
        component's Lease is seen (or after 30 s)."""
        self._tasks = [asyncio.create_task(self._forever(w)) for w in watches]
        deadline = time.monotonic() + 30
        while not self.of(COMPONENT) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _forever(once: Callable[[], Awaitable[None]]) -> None:
        while True:
            with contextlib.suppress(Exception):
                await once()
            await asyncio.sleep(0.2)

    async def _lease_once(self, name: str) -> None:
        stream = self.client.watch(Lease, namespace=NAMESPACE, fields={"metadata.name": name})
        async for _typ, lease in quiet_bounded(stream, LEASE_QUIET_S):
            now = time.monotonic()
            holder = (lease.spec.holderIdentity if lease.spec else None) or ""
            rv = (lease.metadata.resourceVersion if lease.metadata else None) or ""
            duration = lease.spec.leaseDurationSeconds if lease.spec else None
            self.leases.append(LeaseSeen(now, name, holder, rv, duration))

    async def _pods_once(self, labels: dict[str, Any] | None = None) -> None:
        """The pods named after the component (of those with `labels`, if given)."""
        stream = self.client.watch(Pod, namespace=NAMESPACE, labels=labels)
        async for typ, pod in quiet_bounded(stream, PODS_QUIET_S):
            now = time.monotonic()
            meta = pod.metadata
            name = (meta.name if meta else None) or ""
            if not name.startswith(COMPONENT):
                continue
            statuses = (pod.status.containerStatuses if pod.status else None) or []
            terminated = bool(statuses) and all(
                cs.state is not None and cs.state.terminated is not None for cs in statuses
            )
            state, restarts = container_state(pod)
            self.pods.append(
                PodSeen(
                    at=now,
                    kind=str(typ),
                    name=name,
                    ready=pod_ready(pod),
                    terminated=terminated,
                    state=state,
                    restarts=restarts,
                    deleting=bool(meta and meta.deletionTimestamp),
                )
            )

    def of(self, name: str) -> list[LeaseSeen]:
        return [e for e in self.leases if e.name == name]

    def holder(self, name: str = COMPONENT) -> str:
        seen = self.of(name)
        return seen[-1].holder if seen else ""

    def first_lease(self, after: float, pred: Callable[[str], bool]) -> LeaseSeen | None:
        """The first record of the component's Lease from `after` on whose holder `pred`
        accepts."""
        return next((e for e in self.of(COMPONENT) if e.at >= after and pred(e.holder)), None)

    def last_lease(self, before: float, pred: Callable[[str], bool]) -> float | None:
        """Arrival of the last record of the component's Lease before `before` whose
        holder `pred` accepts."""
        seen = self.last_lease_seen(before, pred)
        return seen.at if seen else None

    def last_lease_seen(self, before: float, pred: Callable[[str], bool]) -> LeaseSeen | None:
        seen = [e for e in self.of(COMPONENT) if e.at < before and pred(e.holder)]
        return seen[-1] if seen else None


# --- the reconcile probe -------------------------------------------------------------------
class Scored(Protocol):
    """The fields of a repetition that `score_window` fills in."""

    t_first_reconciled: float | None
    t_worst_reconciled: float | None
    baseline_s: float
    worst_s: float
    outage_s: float
    unreconciled: int
    samples: int
    probes: list[tuple[float, float | None]]


def first_reconciled(samples: Sequence[Sample], after: float) -> float | None:
    times = [s.reconciled for s in samples if s.reconciled is not None and s.reconciled >= after]
    return min(times) if times else None


def score_window(
    rep: Scored,
    samples: Sequence[Sample],
    *,
    start: float,
    stopped: float,
    origin: float,
    quiet_s: float,
    after_s: float,
) -> tuple[list[Sample], Sample]:
    """The longest latency among probes sent from `start` until `after_s` after the first
    probe the new leader answered, minus the baseline (the median latency of the probes
    sent in the `quiet_s` before `start`, but for its last 0.5 s); a probe never answered
    counts as waiting until the probe stopped. Fills in `rep` (the probes' send times
    relative to `origin`); returns the window and its longest-waiting probe."""
    quiet = [s for s in samples if start - quiet_s <= s.sent < start - 0.5]
    rep.baseline_s = baseline_of(quiet)
    end = (rep.t_first_reconciled or stopped) + after_s
    window = [s for s in samples if start <= s.sent <= end]
    o = outage_of(window, baseline=rep.baseline_s, end=stopped)
    rep.worst_s, rep.outage_s = o.worst, o.outage
    rep.unreconciled, rep.samples = o.unreconciled, o.samples
    worst = max(window, key=lambda s: (s.reconciled or stopped) - s.sent)
    rep.t_worst_reconciled = worst.reconciled
    rep.probes = [
        (round(s.sent - origin, 3), None if s.latency is None else round(s.latency, 3))
        for s in window
    ]
    return window, worst


# --- figures and output --------------------------------------------------------------------
def round3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def med_max(values: Sequence[float | None]) -> dict[str, float | None]:
    """{"median": ..., "max": ...} of the values that are there (None for none)."""
    got = [v for v in values if v is not None]
    stats = (statistics.median(got), max(got)) if got else (None, None)
    return dict(zip(("median", "max"), stats, strict=True))


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """The first row a head, underlined; the first column left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_info() -> dict[str, Any]:
    """The head of the raw numbers: this command and the machine."""
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


def reps_json(reps: Sequence[Any]) -> list[dict[str, Any]]:
    """Every repetition (a dataclass with `figures()`) with its figures."""
    return [
        {
            **asdict(r),
            "figures": r.figures(),
            "clock": "t_* are this process's monotonic seconds",
        }
        for r in reps
    ]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its module docstring as the description."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def print_run_info(result: dict[str, Any]) -> None:
    print(f"command: {result['command']}")
    print(f"machine: nproc={result['machine']['nproc']} {result['machine']['platform']}")


def finish(result: dict[str, Any], failed: Sequence[str], path: Path | None) -> int:
    """Print the failed repetitions, then the raw numbers (to `path`, or to stdout);
    the exit status: 1 if any repetition failed."""
    if failed:
        print("\nfailed repetitions:\n  " + "\n  ".join(failed))
    text = json.dumps(result, indent=2)
    if path:
        path.write_text(text + "\n")
        print(f"\nraw numbers: {path}")
    else:
        print("\n" + text)
    return 1 if failed else 0
