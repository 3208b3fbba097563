#!/usr/bin/env python3
"""The failover benchmark: the reconcile outage when the leading kube-controller-manager
of a Deployment crashes, with and without the guard's reaper, in one lab, alternating.

    sudo python3 bench/failover.py [--reps 10] [--root /tmp/kh-failover] [--host-port 16621]

One lab (`lab up --workers 2`), `kubehoist pivot --replicas 3` (standbys at the
default retry period, 2 s; lease 15 s). Then, for every repetition, in turn:

off   `kubehoist guard run --no-reaper` runs as a host process; the leader's container
      process is SIGKILLed (a crash; the kubelet restarts it). The standbys wait
      out the lease duration.
on    the same with the reaper: the guard releases the Lease once the kubelet reports
      the holder's container dead, and a standby takes it at its next retry.

The guard runs in both modes so that the load is the same; it holds the guards' Lease
before every kill. Its manifests directory is an empty temporary directory (nothing
parked there: it never falls back). Between repetitions: the killed pod's container
Ready again, every replica Ready, and one holder for a while.

A reconcile probe (`kubehoist.kube.probe`) runs through each repetition. Times are this
process's monotonic clock, taken right after the kill and when a watch event arrives
(the Lease, the Deployment's pods, the probe's ReplicaSets).

This is a benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from kubehoist.constants import selector_labels
from kubehoist.kube import leases
from kubehoist.kube.probe import ReconcileProbe
from kubehoist.lab.podproc import container_pid
from kubehoist.lab.spec import LabSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common
from bench.common import COMPONENT, LEASE_DURATION_S, NAMESPACE, Lab

GUARD_LEASE = f"kubehoist-guard-{COMPONENT}"
GUARD_NODE = "bench"
MODES = ("off", "on")  # reaper off / on, alternating in this order
RESTART_WAIT_S = 480.0  # the kubelet's crash-loop back-off reaches 300 s
QUIET_S = 10.0  # probe running, guard holding its Lease, nothing happening: the baseline
AFTER_S = 2.0  # probes sent up to this long after the first answer of the new leader
SETTLED_S = 5.0  # one holder, unchanged, for this long: the leader is settled


# --- what the watches saw ------------------------------------------------------------------
def _pod_name(holder: str) -> str:
    """A Deployment pod's name from a holder identity (its hostname is the pod's name)."""
    return leases.holder_node(holder) if holder else ""


class Recorder(common.Recorder):
    """Watches the component's Lease, the guards' Lease and the Deployment's pods."""

    async def start(self) -> None:
        await self._start(
            lambda: self._lease_once(COMPONENT),
            lambda: self._lease_once(GUARD_LEASE),
            lambda: self._pods_once(dict(selector_labels(COMPONENT))),
        )

    def held_since(self) -> float | None:
        """Arrival of the first record of the current holder's uninterrupted tenure."""
        seen = self.of(COMPONENT)
        if not seen or not seen[-1].holder:
            return None
        holder = seen[-1].holder
        since = seen[-1].at
        for e in reversed(seen):
            if e.holder != holder:
                break
            since = e.at
        return since

    def death_reported(self, pod: str, after: float, restarts: int) -> float | None:
        """The first status of `pod` after `after` that shows its container gone: not
        running, or running again with more restarts."""
        return next(
            (
                p.at
                for p in self.pods
                if p.at >= after
                and p.name == pod
                and (p.kind == "DELETED" or p.state != "running" or p.restarts > restarts)
            ),
            None,
        )

    def ready_again(self, pod: str, after: float, restarts: int) -> float | None:
        return next(
            (
                p.at
                for p in self.pods
                if p.at >= after and p.name == pod and p.ready and p.restarts > restarts
            ),
            None,
        )


# --- the guard -----------------------------------------------------------------------------
@dataclass
class GuardProc:
    """`kubehoist guard run` as a host process: the reaper's logic is the guard's static
    pod's, with the lab's admin kubeconfig and an empty manifests directory."""

    lab: Lab
    reaper: bool
    manifests_dir: Path
    proc: asyncio.subprocess.Process | None = None
    identity: str = ""
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    def cmd(self) -> list[str]:
        args = [
            "guard",
            "run",
            "--component",
            COMPONENT,
            "--kubeconfig",
            str(self.lab.kubeconfig),
            "--manifests-dir",
            str(self.manifests_dir),
            "--node",
            GUARD_NODE,
            "--metrics-port",
            "0",
        ]
        if not self.reaper:
            args.append("--no-reaper")
        return common.kubehoist_cmd(*args)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

        async def started() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                tail = " | ".join(self.stderr[-5:])
                raise RuntimeError(f"guard exited {self.proc.returncode}: {tail}")
            return bool(self.identity)

        await common.wait_for("the guard's start line", started, timeout=60)

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            now = time.monotonic()
            try:
                record = json.loads(raw)
            except ValueError:
                record = {"event": "unparsed", "text": raw.decode(errors="replace").rstrip()}
            self.lines.append((now, record))
            if record.get("event") == "start":
                self.identity = str(record.get("guard", ""))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    def actions(self) -> list[tuple[float, dict[str, Any]]]:
        return [(at, r) for at, r in self.lines if r.get("event") == "action"]

    async def stop(self) -> None:
        """SIGTERM: the guard releases the guards' Lease and logs `stop`."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._readers, return_exceptions=True), 5)


# --- waiting -------------------------------------------------------------------------------
async def settled(client: AsyncClient, recorder: Recorder, replicas: int) -> bool:
    """Every replica Ready (none going away), and one of them has held the Lease,
    unchanged, for `SETTLED_S`."""
    pods = [p for p in await common.deployment_pods(client) if p.metadata and p.metadata.name]
    alive = [p for p in pods if not (p.metadata and p.metadata.deletionTimestamp)]
    if len(alive) != replicas or not all(common.pod_ready(p) for p in alive):
        return False
    names = {p.metadata.name for p in alive if p.metadata}
    since = recorder.held_since()
    return (
        _pod_name(recorder.holder()) in names
        and since is not None
        and time.monotonic() - since >= SETTLED_S
    )


# --- one repetition ------------------------------------------------------------------------
@dataclass
class Rep:
    mode: str  # "off" or "on": the guard's reaper
    rep: int
    pod: str = ""  # the killed leader's pod
    node: str = ""
    pid: int = 0
    holder: str = ""  # its identity on the Lease
    restarts_before: int = 0
    guard: str = ""  # the guard's identity
    t_guard_holds: float | None = None  # the guard seen holding the guards' Lease
    t_kill: float = 0.0  # right after the SIGKILL
    t_last_renew: float | None = None  # the killed holder's last record seen
    t_reported: float | None = None  # the pod's status shows the container gone
    t_reap_logged: float | None = None  # the guard's Reap action line arrived
    t_release: float | None = None  # the Lease seen with an empty holder
    t_new_holder: float | None = None  # another identity seen holding the Lease
    new_holder: str = ""
    t_first_reconciled: float | None = None  # first probe answered after the new holder
    t_worst_reconciled: float | None = None
    t_ready_again: float | None = None  # the killed pod's container Ready again
    t_end: float = 0.0
    baseline_s: float = 0.0
    worst_s: float = 0.0
    outage_s: float = 0.0
    unreconciled: int = 0
    samples: int = 0
    probes: list[tuple[float, float | None]] = field(default_factory=list)  # (sent-kill, lat)
    guard_actions: list[dict[str, Any]] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, float | None]:
        return {
            "outage_s": round(self.outage_s, 3),
            "lease_gap_s": common.diff(self.t_kill, self.t_new_holder),
            "release_s": common.diff(self.t_kill, self.t_release),
            "reported_s": common.diff(self.t_kill, self.t_reported),
            "reap_s": common.diff(self.t_reported, self.t_reap_logged),
            "standby_retry_s": common.diff(self.t_release, self.t_new_holder),
            "no_renewal_s": common.diff(self.t_last_renew, self.t_new_holder),
            "controller_start_s": common.diff(self.t_new_holder, self.t_first_reconciled),
            "backlog_s": common.diff(self.t_first_reconciled, self.t_worst_reconciled),
            "kill_to_reconciled_s": common.diff(self.t_kill, self.t_first_reconciled),
            "restart_s": common.diff(self.t_kill, self.t_ready_again),
        }


def score(rep: Rep, probe: ReconcileProbe, stopped: float) -> None:
    """As bench/handover: the longest latency among probes sent from the kill until
    `AFTER_S` after the first probe the new leader answered, minus the quiet baseline
    (a probe never answered counts as waiting until the probe stopped)."""
    common.score_window(
        rep,
        probe.samples(),
        start=rep.t_kill,
        stopped=stopped,
        origin=rep.t_kill,
        quiet_s=QUIET_S,
        after_s=AFTER_S,
    )


async def kill_leader(lab: Lab, spec: LabSpec, client: AsyncClient, rep: Rep) -> None:
    """SIGKILL the leading pod's container process, as a crash would."""
    pod = await client.get(Pod, rep.pod, namespace=NAMESPACE)
    rep.node = str(pod.spec.nodeName) if pod.spec else ""
    _, rep.restarts_before = common.container_state(pod)
    rep.pid = await asyncio.to_thread(container_pid, spec, pod, COMPONENT)
    os.kill(rep.pid, signal.SIGKILL)
    rep.t_kill = time.monotonic()


async def one_rep(
    lab: Lab,
    spec: LabSpec,
    client: AsyncClient,
    recorder: Recorder,
    mode: str,
    n: int,
    replicas: int,
) -> Rep:
    rep = Rep(mode=mode, rep=n)
    with tempfile.TemporaryDirectory(prefix="kh-failover-manifests-") as empty:
        guard = GuardProc(lab, reaper=(mode == "on"), manifests_dir=Path(empty))
        probe: ReconcileProbe | None = None
        try:
            await guard.start()
            rep.guard = guard.identity

            async def guard_holds() -> bool:
                return recorder.holder(GUARD_LEASE) == guard.identity

            await common.wait_for("the guard to hold the guards' Lease", guard_holds, timeout=60)
            rep.t_guard_holds = time.monotonic()
            probe = ReconcileProbe(client)
            await probe.__aenter__()
            await asyncio.sleep(QUIET_S)
            if not await settled(client, recorder, replicas):
                raise RuntimeError("not settled at the kill (a holder change or a pod not Ready)")
            if recorder.holder(GUARD_LEASE) != guard.identity:
                raise RuntimeError("the guard lost the guards' Lease before the kill")
            rep.holder = recorder.holder()
            rep.pod = _pod_name(rep.holder)
            await kill_leader(lab, spec, client, rep)

            async def new_leader_reconciles() -> bool:
                seen = recorder.first_lease(rep.t_kill, lambda h: h not in ("", rep.holder))
                if seen is None:
                    return False
                rep.t_new_holder, rep.new_holder = seen.at, seen.holder
                rep.t_first_reconciled = common.first_reconciled(probe.samples(), rep.t_new_holder)
                return rep.t_first_reconciled is not None

            await common.wait_for("a new leader to reconcile", new_leader_reconciles)
            assert rep.t_first_reconciled is not None
            await asyncio.sleep(max(0.0, rep.t_first_reconciled + AFTER_S - time.monotonic()))
            await probe.stop(drain=10)
            stopped = time.monotonic()
            score(rep, probe, stopped)
            # Released by the guard: an empty holder seen between the kill and the new one.
            rep.t_release = next(
                (
                    e.at
                    for e in recorder.of(COMPONENT)
                    if rep.t_kill <= e.at <= rep.t_new_holder and not e.holder
                ),
                None,
            )

            # The next repetition starts from the same state: the killed pod back.
            async def back() -> bool:
                return await settled(client, recorder, replicas) and (
                    recorder.ready_again(rep.pod, rep.t_kill, rep.restarts_before) is not None
                )

            await common.wait_for(
                "the killed pod Ready again, a leader settled", back, RESTART_WAIT_S, every=0.5
            )
            rep.t_ready_again = recorder.ready_again(rep.pod, rep.t_kill, rep.restarts_before)
            rep.t_reported = recorder.death_reported(rep.pod, rep.t_kill, rep.restarts_before)
            rep.t_last_renew = recorder.last_lease(rep.t_kill, lambda h: h == rep.holder)
            rep.t_end = time.monotonic()
        finally:
            if probe is not None:
                await probe.stop()
                with contextlib.suppress(Exception):
                    await probe.cleanup()
            await guard.stop()
    rep.guard_actions = [
        {"at_since_kill": round(at - rep.t_kill, 3), **r} for at, r in guard.actions()
    ]
    for at, r in guard.actions():
        if (
            r.get("action") == "Reap"
            and r.get("holder") == rep.holder
            and rep.t_reap_logged is None
        ):
            rep.t_reap_logged = at
        else:
            rep.odd.append(
                f"guard action {r.get('action')} ({r.get('holder', '')}): {r.get('reason')}"
            )
    if mode == "on" and rep.t_reap_logged is None:
        rep.odd.append("the reaper did not reap the killed holder")
    if mode == "off" and rep.t_release is not None:
        rep.odd.append("the Lease was released with the reaper off")
    if not any(r.get("event") == "stop" for _, r in guard.lines):
        rep.odd.append("the guard did not log its stop")
    return rep


# --- the run -------------------------------------------------------------------------------
FIGURES = (
    ("outage_s", "reconcile outage (kill -> reconciling again)"),
    ("lease_gap_s", "lease gap: kill -> new holder"),
    ("release_s", "kill -> Lease released"),
    ("reported_s", "kill -> pod status shows the container gone"),
    ("reap_s", "status shown -> guard's Reap logged"),
    ("standby_retry_s", "standby retry: released -> new holder"),
    ("no_renewal_s", "last renewal seen -> new holder"),
    ("controller_start_s", "controller start: new holder -> reconciled"),
    ("backlog_s", "backlog: first -> last waiting probe answered"),
    ("kill_to_reconciled_s", "kill -> first probe reconciled"),
    ("restart_s", "kill -> killed pod Ready again"),
)
RATIOS = ("outage_s", "lease_gap_s", "no_renewal_s", "kill_to_reconciled_s")  # off / on


def summarize(reps: Sequence[Rep]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        figs = [r.figures() for r in reps if r.mode == mode and r.error is None]
        out[mode] = {k: common.med_max([f[k] for f in figs]) for k, _ in FIGURES}
        out[mode]["n"] = len(figs)
        out[mode]["restarted_pod_led"] = sum(
            1
            for r in reps
            if r.mode == mode and r.error is None and _pod_name(r.new_holder) == r.pod
        )
    out["ratio_off_on"] = {}
    for k in RATIOS:
        off, on = out["off"][k]["median"], out["on"][k]["median"]
        # A ratio to a near-zero time says nothing.
        ok = off is not None and on is not None and on >= 0.05
        out["ratio_off_on"][k] = round(off / on, 2) if ok else None
    return out


def table(summary: dict[str, Any]) -> str:
    """Median and max per mode, and the ratio of medians off / on."""
    head = ["figure (seconds)", "off med", "off max", "on med", "on max", "off/on"]
    rows = [head]
    for k, label in FIGURES:
        off, on = summary["off"][k], summary["on"][k]
        ratio = summary["ratio_off_on"].get(k)
        rows.append(
            [
                label,
                common.fmt(off["median"]),
                common.fmt(off["max"]),
                common.fmt(on["median"]),
                common.fmt(on["max"]),
                "-" if ratio is None else f"{ratio:.1f}x",
            ]
        )
    return common.render_table(rows)


async def pivot(lab: Lab, args: argparse.Namespace) -> dict[str, float]:
    cmd = common.kubehoist_cmd(
        "pivot",
        "--kubeconfig",
        str(lab.kubeconfig),
        "--host-root",
        str(lab.node_root),
        "--replicas",
        str(args.replicas),
    )
    return common.pivot_phases(*await common.run_streamed(cmd))


async def bench(args: argparse.Namespace, lab: Lab) -> dict[str, Any]:
    spec = LabSpec.load(lab.root)
    kc = KubeConfig.from_file(str(lab.kubeconfig))
    client = AsyncClient(kc, trust_env=False)
    recorder = Recorder(client)
    await recorder.start()
    reps: list[Rep] = []
    phases: dict[str, float] = {}
    try:
        try:
            await client.get(Deployment, COMPONENT, namespace=NAMESPACE)
            pivoted = True
        except ApiError:
            pivoted = False
        if pivoted:
            common.log("already pivoted (reused lab)")
        else:
            common.log(f"kubehoist pivot --replicas {args.replicas}")
            phases = await pivot(lab, args)
            common.log(f"  phases: {phases}")

        async def ready() -> bool:
            return await settled(client, recorder, args.replicas)

        await common.wait_for(
            "every replica Ready and a leader settled", ready, RESTART_WAIT_S, every=0.5
        )
        common.log(f"settling {args.settle:.0f}s")
        await asyncio.sleep(args.settle)
        for n in range(1, args.reps + 1):
            for mode in MODES:
                common.log(f"rep {n}/{args.reps} reaper {mode}")
                try:
                    rep = await one_rep(lab, spec, client, recorder, mode, n, args.replicas)
                except Exception as exc:
                    rep = Rep(mode=mode, rep=n, error=f"{type(exc).__name__}: {exc}")
                    common.log(f"  failed: {rep.error}")
                    await common.wait_for(
                        "a settled state after a failure", ready, RESTART_WAIT_S, every=0.5
                    )
                reps.append(rep)
                if rep.error is None:
                    f = rep.figures()
                    common.log(
                        f"  killed {rep.pod} on {rep.node} (restarts {rep.restarts_before}), "
                        f"new holder {_pod_name(rep.new_holder)}: "
                        + ", ".join(f"{k}={common.fmt(v)}" for k, v in f.items())
                        + f", baseline={rep.baseline_s:.3f}"
                    )
                for odd in rep.odd:
                    common.log(f"  odd: {odd}")
    finally:
        await recorder.stop()
        with contextlib.suppress(Exception):
            await client.close()
    summary = summarize(reps)
    return {
        **common.run_info(),
        "replicas": args.replicas,
        "lease_duration_s": LEASE_DURATION_S,
        "quiet_s": QUIET_S,
        "pivot_phases": phases,
        "summary": summary,
        "reps": common.reps_json(reps),
    }


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--reps", type=int, default=10, help="kills per mode (default 10)")
    ap.add_argument("--replicas", type=int, default=3, choices=(2, 3))
    ap.add_argument("--root", type=Path, default=Path("/tmp/kh-failover"))
    ap.add_argument("--host-port", type=int, default=16621)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after the pivot")
    ap.add_argument("--json", type=Path, help="write the raw numbers here (default: stdout)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab up (for debugging)")
    ap.add_argument(
        "--reuse-lab",
        action="store_true",
        help="use the lab already up at --root (and its Deployment, if pivoted)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("the lab needs root")
    lab = Lab(root=args.root.resolve(), port=args.host_port)
    with common.lab_up(lab, keep=args.keep_lab, reuse=args.reuse_lab):
        result = asyncio.run(bench(args, lab))
    common.print_run_info(result)
    print(
        f"kubehoist pivot --replicas {result['replicas']} (lease 15s, retry 2s); "
        "guard run as a host process, --no-reaper for off"
    )
    print()
    print(table(result["summary"]))
    s = result["summary"]
    print(
        "\nthe killed pod's restarted container became the new leader: "
        f"off {s['off']['restarted_pod_led']}/{s['off']['n']}, "
        f"on {s['on']['restarted_pod_led']}/{s['on']['n']}"
    )
    failed = [f"{r['mode']}#{r['rep']}: {r['error']}" for r in result["reps"] if r["error"]]
    odd = [f"{r['mode']}#{r['rep']}: {o}" for r in result["reps"] for o in r["odd"]]
    if odd:
        print("\nodd:\n  " + "\n  ".join(odd))
    return common.finish(result, failed, args.json)


if __name__ == "__main__":
    sys.exit(main())
