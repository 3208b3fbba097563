#!/usr/bin/env python3
"""The kubeadm upgrade benchmark (issue 13): the controllers' outage over a whole
`kubeadm upgrade` from v1.35.4 to v1.36.3 of a 3-control-plane lab, pivoted and
guarded vs. as kubeadm made it (static pods), in one run.

    sudo python3 bench/upgrade.py [--variants static,pivoted] [--root /tmp/khbench-upgrade]
        [--host-port 16520] [--keep] [--json FILE]

For each variant a fresh lab (3 control planes, 1 worker, made by kubeadm at v1.35.4).
`pivoted`: the controller manager and the scheduler pivoted (`--retry-period 500ms`,
2 replicas), the controller manager's guard installed. Then, while a reconcile probe
(`kubehoist.kube.probe`, a 0-replica Deployment every 0.25 s, its ReplicaSet awaited)
runs from 10 s before to 10 s after: `kubehoist upgrade prepare` (pivoted only),
`kubehoist lab upgrade` (each node's packages, `kubeadm upgrade apply` on cp-1,
`kubeadm upgrade node` on the others, kubelet restarts), `kubehoist upgrade complete`
(pivoted only).

Figures per variant: the outage (the longest probe latency minus the quiet baseline),
the seconds during which some probe waited longer than baseline + 1 s (the union of
those waits: how long the controllers were away in total), each step's wall time and
worst latency, and the probes the API server refused (an API server restarting: not a
controllers' outage, counted apart). Times are this process's monotonic clock.

The probe reaches the API servers through the control-plane endpoint, as the
Deployment's pods do, so an API server restarting under the probe's own connection
also reads as "away". The same figures are therefore also taken on the API servers'
side ("server"): for each probe object, its ReplicaSet's creationTimestamp minus its
Deployment's (both stamped by the API servers, on one clock, 1 s resolution): what the
controllers took, whichever way the probe saw it. A lag over 2 s counts as away there.

A benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import Deployment, ReplicaSet

from kubehoist.kube.probe import PROBE_LABEL, ReconcileProbe
from kubehoist.measure import Sample, baseline_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common

OLD, NEW = "v1.35.4", "v1.36.3"
VARIANTS = ("static", "pivoted")
QUIET_S = 10.0
AFTER_S = 10.0
SLOW_S = 1.0  # a probe waiting this much over the baseline counts as "controllers away"
SERVER_SLOW_S = 2.0  # the same on the API servers' side: their stamps have 1 s resolution


@dataclass
class Step:
    name: str
    start: float
    end: float
    worst_s: float | None = None
    server_worst_s: float | None = None


@dataclass
class Run:
    variant: str
    steps: list[Step] = field(default_factory=list)
    baseline_s: float = 0.0
    outage_s: float = 0.0
    away_s: float = 0.0
    samples: int = 0
    unreconciled: int = 0
    create_errors: int = 0
    rewatches: int = 0
    wall_s: float = 0.0
    server_outage_s: float | None = None
    server_away_s: float | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "outage_s": round(self.outage_s, 3),
            "away_s": round(self.away_s, 3),
            "baseline_s": round(self.baseline_s, 3),
            "wall_s": round(self.wall_s, 1),
            "steps": {s.name: round(s.end - s.start, 1) for s in self.steps},
            "step_worst_s": {s.name: s.worst_s for s in self.steps},
            "samples": self.samples,
            "unreconciled": self.unreconciled,
            "refused_by_api": self.create_errors,
            "server_outage_s": self.server_outage_s,
            "server_away_s": None if self.server_away_s is None else round(self.server_away_s, 1),
            "server_step_worst_s": {s.name: s.server_worst_s for s in self.steps},
        }


def away_seconds(samples: list[Sample], *, baseline: float, end: float) -> float:
    """PURE: the length of the union of [sent + baseline + SLOW_S, answered] over probes
    that waited longer than baseline + SLOW_S (an unanswered one waits until `end`)."""
    return spans_union(
        [
            (s.sent + baseline + SLOW_S, s.reconciled if s.reconciled is not None else end)
            for s in samples
            if (s.reconciled if s.reconciled is not None else end) - s.sent > baseline + SLOW_S
        ]
    )


def spans_union(spans: list[tuple[float, float]]) -> float:
    """PURE: the length of the union of [a, b] spans."""
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(spans):
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


async def server_stamps(client: AsyncClient, probe: ReconcileProbe) -> list[tuple[float, float]]:
    """(Deployment created, its ReplicaSet created) per probe object that has both, as
    the API servers stamped them (epoch seconds, 1 s resolution)."""
    labels: dict[str, Any] = {PROBE_LABEL: probe.run}
    made: dict[str, float] = {}
    async for rs in client.list(ReplicaSet, namespace=probe.namespace, labels=labels):
        meta = rs.metadata
        if meta is None or meta.creationTimestamp is None:
            continue
        for ref in meta.ownerReferences or []:
            if ref.kind == "Deployment":
                made[ref.name] = meta.creationTimestamp.timestamp()
    pairs = []
    async for dep in client.list(Deployment, namespace=probe.namespace, labels=labels):
        meta = dep.metadata
        if meta and meta.name in made and meta.creationTimestamp is not None:
            pairs.append((meta.creationTimestamp.timestamp(), made[meta.name]))
    return pairs


def kh(lab: common.Lab, *args: str, timeout: float = 1800) -> str:
    return common.run(
        common.kubehoist_cmd(*args, "--kubeconfig", str(lab.kubeconfig)), timeout=timeout
    )


def lab_cmd(lab: common.Lab, *args: str, timeout: float = 3600) -> str:
    return common.run(common.kubehoist_cmd("lab", *args, "--root", str(lab.root)), timeout=timeout)


async def step(run: Run, name: str, *cmd_and_timeout: Any) -> None:
    common.log(f"{run.variant}: {name}")
    start = time.monotonic()
    fn, *args = cmd_and_timeout
    await asyncio.to_thread(fn, *args)
    run.steps.append(Step(name, start, time.monotonic()))


async def one_variant(variant: str, lab: common.Lab) -> Run:
    run = Run(variant)
    host_root = str(lab.root / "nodes" / "cp-1")
    if variant == "pivoted":
        for comp in ("kube-controller-manager", "kube-scheduler"):
            common.log(f"pivot {comp}")
            kh(lab, "pivot", comp, "--host-root", host_root, "--retry-period", "500ms",
               "--timeout", "300")  # fmt: skip
        common.log("guard install")
        kh(lab, "guard", "install", "--component", "kube-controller-manager")
    client = AsyncClient(KubeConfig.from_file(str(lab.kubeconfig)), trust_env=False)
    probe = ReconcileProbe(client)
    wall_minus_mono = time.time() - time.monotonic()
    async with probe:
        await asyncio.sleep(QUIET_S)
        started = time.monotonic()
        if variant == "pivoted":
            await step(run, "prepare", kh, lab, "upgrade", "prepare", "--timeout", "300")
        await step(run, "kubeadm apply (cp-1)", lab_cmd, lab, "upgrade",
                   "--kubernetes-version", NEW, "--node", "cp-1")  # fmt: skip
        await step(run, "kubeadm node (others)", lab_cmd, lab, "upgrade",
                   "--kubernetes-version", NEW, "--node", "cp-2", "--node", "cp-3",
                   "--node", "worker-1")  # fmt: skip
        if variant == "pivoted":
            await step(run, "complete", kh, lab, "upgrade", "complete", "--host-root",
                       host_root, "--timeout", "300")  # fmt: skip
        finished = time.monotonic()
        await asyncio.sleep(AFTER_S)
        await probe.stop(drain=5.0)
    stopped = time.monotonic()
    try:
        stamps = await server_stamps(client, probe)
    except Exception as exc:  # figures not observed, not assumed
        common.log(f"{variant}: the API servers' stamps were not read: {exc}")
        stamps = []
    await probe.cleanup()
    samples = probe.samples()
    quiet = [s for s in samples if started - QUIET_S <= s.sent < started - 0.5]
    run.baseline_s = baseline_of(quiet)
    window = [s for s in samples if started <= s.sent <= finished + AFTER_S]

    def waited(s: Sample) -> float:
        return (s.reconciled if s.reconciled is not None else stopped) - s.sent

    run.outage_s = max(0.0, max(waited(s) for s in window) - run.baseline_s)
    run.away_s = away_seconds(window, baseline=run.baseline_s, end=stopped)
    run.samples, run.unreconciled = len(window), sum(s.reconciled is None for s in window)
    run.create_errors, run.rewatches = probe.create_errors, probe.rewatches
    run.wall_s = finished - started
    for st in run.steps:
        inside = [s for s in samples if st.start <= s.sent <= st.end]
        st.worst_s = round(max(map(waited, inside)) - run.baseline_s, 3) if inside else None
    lo, hi = started + wall_minus_mono, finished + AFTER_S + wall_minus_mono
    lags = [(d, r) for d, r in stamps if lo - 1 <= d <= hi]
    if lags:
        run.server_outage_s = max(r - d for d, r in lags)
        run.server_away_s = spans_union(
            [(d + SERVER_SLOW_S, r) for d, r in lags if r - d > SERVER_SLOW_S]
        )
        for st in run.steps:
            a, b = st.start + wall_minus_mono, st.end + wall_minus_mono
            inside_lags = [r - d for d, r in lags if a - 1 <= d <= b]
            st.server_worst_s = max(inside_lags) if inside_lags else None
    return run


def table(runs: list[Run]) -> str:
    rows = [["variant", "outage (s)", "away (s)", "server outage (s)", "server away (s)",
             "wall (s)", "refused", "steps (s)"]]  # fmt: skip

    def seen(v: float | None) -> str:
        return "not observed" if v is None else f"{v:.1f}"

    for r in runs:
        f = r.figures()
        steps = ", ".join(f"{k} {v}" for k, v in f["steps"].items())
        rows.append([r.variant, f"{f['outage_s']:.2f}", f"{f['away_s']:.2f}",
                     seen(r.server_outage_s), seen(r.server_away_s),
                     f"{f['wall_s']:.0f}", str(f["refused_by_api"]), steps])  # fmt: skip
    out = common.render_table(rows)
    by = {r.variant: r for r in runs}
    if "static" in by and "pivoted" in by and by["static"].outage_s > 0:
        ratio = by["pivoted"].outage_s / by["static"].outage_s
        out += f"\npivoted / static outage: {ratio:.2f}"
    return out


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--root", type=Path, default=Path("/tmp/khbench-upgrade"))
    p.add_argument("--host-port", type=int, default=16520)
    p.add_argument("--keep", action="store_true", help="Leave the last lab up.")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown {v!r} (known: {', '.join(VARIANTS)})")
    for version in (OLD, NEW):
        common.run(common.kubehoist_cmd("lab", "build", "--kubernetes-version", version),
                   timeout=7200)  # fmt: skip
    result: dict[str, Any] = common.run_info()
    runs: list[Run] = []
    failed: list[str] = []
    for v in variants:
        lab = common.Lab(root=args.root, port=args.host_port)
        try:
            with common.lab_up(lab, keep=args.keep and v == variants[-1], workers=1,
                               control_planes=3, kubernetes_version=OLD):  # fmt: skip
                runs.append(asyncio.run(one_variant(v, lab)))
        except (RuntimeError, TimeoutError, ValueError) as exc:
            failed.append(f"{v}: {exc}")
        result["runs"] = common.reps_json(runs)
    common.print_run_info(result)
    print(table(runs))
    return common.finish(result, failed, args.json)


if __name__ == "__main__":
    sys.exit(main())
