#!/usr/bin/env python3
"""The hand-over benchmark (issue 6): the reconcile outage of moving
kube-controller-manager from its static pod to a Deployment, the article's manual way
and with `kubehoist pivot`, in one lab, alternating.

    sudo python3 bench/handover.py [--reps 5] [--root /tmp/khbench] [--host-port 16481]

Variants, run in turn for every repetition:

a          the article's procedure: apply the rendered Deployment (the controller
           manager's own leader-election timing, nothing tuned), wait for Ready
           standbys, move the static manifest out of the manifests directory by hand;
           restored afterwards (manifest back byte for byte, objects deleted, the static
           pod leading again).
b-2s       `kubehoist pivot` with the default retry period (2s), then `kubehoist rollback`.
b-500ms    `kubehoist pivot --retry-period 500ms`, then `kubehoist rollback`.

A reconcile probe (`kubehoist.kube.probe`) runs throughout each repetition. Times are
this process's monotonic clock, taken when a watch event arrives (Lease, kube-system
pods, probe ReplicaSets) or when the manifest file is seen gone (polled every 20 ms).

This is a benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import Pod
from lightkube.types import CascadeType

from kubehoist.constants import selector_labels
from kubehoist.kube import leases
from kubehoist.kube.probe import ReconcileProbe
from kubehoist.lab.binaries import locate
from kubehoist.measure import outage_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common
from bench.common import COMPONENT, LEASE_DURATION_S, NAMESPACE, NODE

MIRROR_POD = f"{COMPONENT}-{NODE}"
FIELD_MANAGER = "kubehoist-bench"
QUIET_S = 10.0  # probe running, nothing happening: the baseline
STEADY_S = 10.0  # after recovery: API request rates of the new leader and standbys
VARIANTS = {"a": None, "b-2s": None, "b-500ms": "500ms"}  # name -> pivot --retry-period


# --- what the watches saw ------------------------------------------------------------------
def _is_static(holder: str) -> bool:
    return leases.holder_node(holder) == NODE if holder else False


def _is_deployment(holder: str) -> bool:
    return bool(holder) and leases.holder_node(holder).startswith(f"{COMPONENT}-")


class Recorder(common.Recorder):
    """Watches the Lease and the kube-system pods for the whole run."""

    async def start(self) -> None:
        await self._start(lambda: self._lease_once(COMPONENT), self._pods_once)

    def first_at(self, after: float, pred: Callable[[str], bool]) -> float | None:
        seen = self.first_lease(after, pred)
        return None if seen is None else seen.at

    def mirror_dead(self, after: float) -> tuple[float | None, float | None]:
        """(container seen terminated, mirror pod seen deleted) after `after`."""
        mine = [p for p in self.pods if p.at >= after and p.name == MIRROR_POD]
        term = next((p.at for p in mine if p.terminated or p.kind == "DELETED"), None)
        gone = next((p.at for p in mine if p.kind == "DELETED"), None)
        return term, gone

    def lease_writes(self, start: float, end: float) -> int:
        rvs = {e.resource_version for e in self.leases if start <= e.at < end}
        return len(rvs)


# --- the lab -------------------------------------------------------------------------------
class Lab(common.Lab):
    @property
    def aside(self) -> Path:
        """Where the operator of (a) moves the manifest: out of the manifests directory."""
        return self.node_root / "etc/kubernetes" / f"{COMPONENT}.yaml.aside"


def apiserver_lease_requests(lab: Lab) -> dict[str, float]:
    """apiserver_request_total for Leases, summed by verb."""
    kubectl = str(locate().path("kubectl"))
    text = common.run([kubectl, "--kubeconfig", str(lab.kubeconfig), "get", "--raw", "/metrics"])
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="leases"' in line:
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            out[verb] = out.get(verb, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def mirror_ready(client: AsyncClient) -> bool:
    try:
        return common.pod_ready(await client.get(Pod, MIRROR_POD, namespace=NAMESPACE))
    except ApiError:
        return False


# --- one repetition ------------------------------------------------------------------------
@dataclass
class Rep:
    variant: str
    rep: int
    t_start: float = 0.0  # the procedure begins (apply / pivot launched)
    t_retire: float | None = None  # the manifest seen gone from the manifests directory
    t_dead: float | None = None  # static container seen terminated (or mirror pod deleted)
    t_mirror_gone: float | None = None
    t_last_static_renew: float | None = None
    static_lease_duration_s: float | None = None  # leaseDurationSeconds of that record
    t_release: float | None = None  # the Lease seen with an empty holder
    t_new_holder: float | None = None  # a Deployment pod seen holding the Lease
    t_first_reconciled: float | None = None  # first probe ReplicaSet after the new holder
    t_end: float = 0.0
    baseline_s: float = 0.0
    worst_s: float = 0.0
    outage_s: float = 0.0
    unreconciled: int = 0
    samples: int = 0
    cutover_outage_s: float | None = None  # probes in flight at or after retire
    pre_retire_outage_s: float | None = None  # probes answered before retire
    worst_sent_since_retire: float | None = None
    t_worst_reconciled: float | None = None  # when the worst probe was answered
    probes: list[tuple[float, float | None]] = field(default_factory=list)  # (sent, latency)
    phases: dict[str, float] = field(default_factory=dict)  # pivot phase -> seconds
    steady: dict[str, float] = field(default_factory=dict)  # requests/s after recovery
    manifest_identical: bool = False
    error: str | None = None

    def since_retire(self, t: float | None) -> float | None:
        return None if t is None or self.t_retire is None else round(t - self.t_retire, 3)

    def figures(self) -> dict[str, float | None]:
        if self.t_release is not None:
            gap_from: float | None = self.t_release
        elif self.t_last_static_renew is not None and self.static_lease_duration_s is not None:
            # the duration the static holder's own last record stated, not an assumed one
            gap_from = self.t_last_static_renew + self.static_lease_duration_s
        else:
            gap_from = None  # not observed
        gap = common.diff(gap_from, self.t_new_holder)
        return {
            "outage_s": round(self.outage_s, 3),
            "cutover_outage_s": common.round3(self.cutover_outage_s),
            "pre_retire_outage_s": common.round3(self.pre_retire_outage_s),
            # negative: the new holder was seen before the old record's expiry as we
            # timed it (our sight of that record came late); shown as measured
            "lease_gap_s": gap,
            "no_renewal_s": common.diff(self.t_last_static_renew, self.t_new_holder),
            "detection_s": common.diff(self.t_retire, self.t_dead),
            "release_s": common.diff(self.t_dead, self.t_release),
            "standby_retry_s": common.diff(self.t_release, self.t_new_holder),
            "dead_to_holder_s": common.diff(self.t_dead, self.t_new_holder),
            "controller_start_s": common.diff(self.t_new_holder, self.t_first_reconciled),
            "backlog_s": common.diff(self.t_first_reconciled, self.t_worst_reconciled),
            "retire_to_reconciled_s": common.diff(self.t_retire, self.t_first_reconciled),
        }


def score(rep: Rep, probe: ReconcileProbe, stopped: float) -> None:
    """The outage over the whole procedure (from apply / pivot launch), and the part of
    it that the cut-over itself causes: probes still in flight when the manifest went."""
    window, worst = common.score_window(
        rep,
        probe.samples(),
        start=rep.t_start,
        stopped=stopped,
        origin=rep.t_retire or rep.t_start,
        quiet_s=QUIET_S,
        after_s=2.0,
    )
    rep.worst_sent_since_retire = rep.since_retire(worst.sent)
    retire = rep.t_retire or stopped
    cut = [s for s in window if (s.reconciled or stopped) >= retire]
    before = [s for s in window if (s.reconciled or stopped) < retire]
    if cut:
        rep.cutover_outage_s = outage_of(cut, baseline=rep.baseline_s, end=stopped).outage
    if before:
        rep.pre_retire_outage_s = outage_of(before, baseline=rep.baseline_s, end=stopped).outage


async def watch_manifest(lab: Lab, rep: Rep) -> None:
    while lab.manifest.exists():
        await asyncio.sleep(0.02)
    rep.t_retire = time.monotonic()


async def manual_procedure(
    lab: Lab, client: AsyncClient, recorder: Recorder, rendered: list[dict[str, Any]], rep: Rep
) -> None:
    """(a): apply, wait for Ready standbys, move the manifest out of the directory."""
    for obj in rendered:
        await client.apply(codecs.from_dict(obj), field_manager=FIELD_MANAGER, force=True)
    dep = next(o for o in rendered if o["kind"] == "Deployment")
    want = int(dep["spec"].get("replicas", 1))

    async def standing_by() -> bool:
        ready = [p for p in await common.deployment_pods(client) if common.pod_ready(p)]
        return len(ready) >= want and _is_static(recorder.holder())

    await common.wait_for("Ready standbys", standing_by)
    os.rename(lab.manifest, lab.aside)
    rep.t_retire = time.monotonic()


def _kind_of(obj: dict[str, Any]) -> Any:
    return type(codecs.from_dict(obj))


async def restore_manual(
    lab: Lab, client: AsyncClient, sync: Client, recorder: Recorder, rendered: list[dict[str, Any]]
) -> None:
    """Undo (a): manifest back, static pod Ready, the Deployment's pods gone, the Lease
    released once they are (they are certainly dead then), the static pod leading."""
    if lab.aside.exists():
        os.rename(lab.aside, lab.manifest)
    await common.wait_for("the static pod Ready", lambda: mirror_ready(client))
    pods = {
        p.metadata.name
        for p in await common.deployment_pods(client)
        if p.metadata and p.metadata.name
    }
    for obj in rendered:
        with contextlib.suppress(ApiError):
            await client.delete(
                _kind_of(obj),
                obj["metadata"]["name"],
                namespace=NAMESPACE,
                cascade=CascadeType.BACKGROUND,
            )
    labels: dict[str, Any] = dict(selector_labels(COMPONENT))
    async for rs in client.list(ReplicaSet, namespace=NAMESPACE, labels=labels):
        if rs.metadata and rs.metadata.name:
            with contextlib.suppress(ApiError):
                await client.delete(ReplicaSet, rs.metadata.name, namespace=NAMESPACE)
    for name in pods:
        with contextlib.suppress(ApiError):
            await client.delete(Pod, name, namespace=NAMESPACE)

    async def gone() -> bool:
        return not await common.deployment_pods(client)

    await common.wait_for("the Deployment's pods to be gone", gone)
    holder = recorder.holder()
    if holder and leases.holder_node(holder) in pods:
        await asyncio.to_thread(
            leases.release, sync, namespace=NAMESPACE, name=COMPONENT, holder=holder
        )

    async def static_leads() -> bool:
        return _is_static(recorder.holder())

    await common.wait_for("the static pod to lead", static_leads)


async def one_rep(
    lab: Lab,
    client: AsyncClient,
    sync: Client,
    recorder: Recorder,
    variant: str,
    n: int,
    rendered: list[dict[str, Any]],
) -> Rep:
    rep = Rep(variant=variant, rep=n)
    probe = ReconcileProbe(client)
    await probe.__aenter__()
    try:
        await asyncio.sleep(QUIET_S)
        rep.t_start = time.monotonic()
        if variant == "a":
            await manual_procedure(lab, client, recorder, rendered, rep)
        else:
            watcher = asyncio.create_task(watch_manifest(lab, rep))
            args = ["pivot", "--kubeconfig", str(lab.kubeconfig), "--host-root", str(lab.node_root)]
            if VARIANTS[variant]:
                args += ["--retry-period", str(VARIANTS[variant])]
            code, lines = await common.run_streamed(common.kubehoist_cmd(*args))
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            rep.phases = common.pivot_phases(code, lines)
        assert rep.t_retire is not None

        async def new_leader_reconciles() -> bool:
            rep.t_new_holder = recorder.first_at(rep.t_retire or 0.0, _is_deployment)
            if rep.t_new_holder is None:
                return False
            rep.t_first_reconciled = common.first_reconciled(probe.samples(), rep.t_new_holder)
            return rep.t_first_reconciled is not None

        await common.wait_for("a Deployment pod to lead and reconcile", new_leader_reconciles)
        # Steady state under the new leader: request rates of the Lease.
        before = await asyncio.to_thread(apiserver_lease_requests, lab)
        t0 = time.monotonic()
        await asyncio.sleep(STEADY_S)
        after = await asyncio.to_thread(apiserver_lease_requests, lab)
        t1 = time.monotonic()
        rep.steady = {  # Leases: GET (standbys) and PUT (renewals), of every client
            f"apiserver_lease_{verb.lower()}_per_s": round(
                (after[verb] - before.get(verb, 0)) / (t1 - t0), 3
            )
            for verb in ("GET", "PUT")
            if verb in after
        }
        rep.steady["kcm_lease_writes_per_s"] = round(recorder.lease_writes(t0, t1) / (t1 - t0), 3)
        await probe.stop(drain=10)
        stopped = time.monotonic()
        rep.t_end = stopped
        rep.t_dead, rep.t_mirror_gone = recorder.mirror_dead(rep.t_retire)
        last_static = recorder.last_lease_seen(rep.t_new_holder or stopped, _is_static)
        if last_static is not None:
            rep.t_last_static_renew = last_static.at
            rep.static_lease_duration_s = last_static.duration_s
        if variant != "a":
            rep.t_release = recorder.first_at(rep.t_retire, lambda h: h == "")
        score(rep, probe, stopped)
    finally:
        await probe.stop()
        with contextlib.suppress(Exception):
            await probe.cleanup()
    return rep


async def restore(
    lab: Lab,
    client: AsyncClient,
    sync: Client,
    recorder: Recorder,
    variant: str,
    rendered: list[dict[str, Any]],
) -> None:
    if variant == "a":
        await restore_manual(lab, client, sync, recorder, rendered)
        return
    code, lines = await common.run_streamed(
        common.kubehoist_cmd("rollback", "--kubeconfig", str(lab.kubeconfig))
    )
    if code != 0:
        # A pivot that failed has rolled itself back: then nothing is recorded, and the
        # static pod must lead again with its manifest in place.
        common.log("  rollback: " + " | ".join(x.text for x in lines[-3:]))

    async def static_leads() -> bool:
        return lab.manifest.exists() and _is_static(recorder.holder())

    await common.wait_for("the static pod to lead", static_leads)


# --- the run -------------------------------------------------------------------------------
FIGURES = (
    ("outage_s", "reconcile outage (whole procedure)"),
    ("cutover_outage_s", "  of it, probes in flight at/after retire"),
    ("pre_retire_outage_s", "  probes answered before retire"),
    ("lease_gap_s", "lease gap (no valid holder)"),
    ("no_renewal_s", "last static renew -> new holder"),
    ("detection_s", "detection: retire -> static pod dead"),
    ("release_s", "release: dead -> lease released"),
    ("standby_retry_s", "standby retry: released -> new holder"),
    ("dead_to_holder_s", "static pod dead -> new holder"),
    ("controller_start_s", "controller start: new holder -> reconciled"),
    ("backlog_s", "backlog: first -> last waiting probe answered"),
    ("retire_to_reconciled_s", "retire -> first probe reconciled"),
)


def summarize(reps: Sequence[Rep], variants: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variants:
        figs = [r.figures() for r in reps if r.variant == v and r.error is None]
        out[v] = {k: common.med_max([f[k] for f in figs]) for k, _ in FIGURES}
        out[v]["n"] = len(figs)
        for k in sorted({k for r in reps if r.variant == v for k in r.phases}):
            out[v][f"phase_{k}_s"] = common.med_max(
                [r.phases.get(k) for r in reps if r.variant == v]
            )
        for k in sorted({k for r in reps if r.variant == v for k in r.steady}):
            out[v][k] = common.med_max([r.steady.get(k) for r in reps if r.variant == v])
    return out


def table(summary: dict[str, Any], variants: Sequence[str]) -> str:
    """Median and max per variant, and the ratio of medians a / b for every b."""
    bs = [v for v in variants if v != "a"]
    head = ["figure (seconds)"]
    for v in variants:
        head += [f"{v} med", f"{v} max"]
    if "a" in variants:
        head += [f"a/{b}" for b in bs]
    rows = [head]
    keys = [(k, label) for k, label in FIGURES]
    phase_keys = sorted({k for v in variants for k in summary[v] if k.startswith("phase_")})
    rate_keys = sorted({k for v in variants for k in summary[v] if k.endswith("_per_s")})
    keys += [(k, f"pivot phase {k[6:-2]}") for k in phase_keys]
    keys += [(k, k.replace("_per_s", " /s")) for k in rate_keys]
    for k, label in keys:
        row = [label]
        for v in variants:
            cell = summary[v].get(k, {})
            row += [common.fmt(cell.get("median")), common.fmt(cell.get("max"))]
        if "a" in variants:
            for b in bs:
                a_med = summary["a"].get(k, {}).get("median")
                b_med = summary[b].get(k, {}).get("median")
                # Rates are no durations, and a ratio to a near-zero time says nothing.
                timed = not k.endswith("_per_s")
                ok = timed and a_med is not None and b_med is not None and b_med >= 0.05
                row.append(f"{a_med / b_med:.1f}x" if ok else "-")
        rows.append(row)
    return common.render_table(rows)


async def bench(args: argparse.Namespace, lab: Lab) -> dict[str, Any]:
    variants: list[str] = args.variants
    kc = KubeConfig.from_file(str(lab.kubeconfig))
    client = AsyncClient(kc, trust_env=False)
    sync = Client(kc, trust_env=False, field_manager=FIELD_MANAGER)
    recorder = Recorder(client)
    await recorder.start()
    reps: list[Rep] = []
    try:
        await common.wait_for(
            "the static pod to lead", lambda: _async(_is_static(recorder.holder()))
        )
        original = lab.manifest.read_bytes()
        rendered_list = json.loads(
            common.run(
                common.kubehoist_cmd(
                    "render",
                    "-f",
                    str(lab.manifest),
                    "--host-root",
                    str(lab.node_root),
                    "-o",
                    "json",
                )
            )
        )
        rendered: list[dict[str, Any]] = list(rendered_list["items"])
        common.log(
            f"rendered {', '.join(o['kind'] + ' ' + o['metadata']['name'] for o in rendered)}"
        )
        common.log(f"settling {args.settle:.0f}s")
        await asyncio.sleep(args.settle)
        for n in range(1, args.reps + 1):
            for variant in variants:
                common.log(f"rep {n}/{args.reps} {variant}")
                try:
                    rep = await one_rep(lab, client, sync, recorder, variant, n, rendered)
                except Exception as exc:
                    rep = Rep(variant=variant, rep=n, error=f"{type(exc).__name__}: {exc}")
                    common.log(f"  failed: {rep.error}")
                common.log(f"  restoring ({variant})")
                await restore(lab, client, sync, recorder, variant, rendered)
                rep.manifest_identical = lab.manifest.read_bytes() == original
                if not rep.manifest_identical:
                    raise RuntimeError("the restored manifest differs from the original")
                reps.append(rep)
                if rep.error is None:
                    f = rep.figures()
                    common.log(
                        "  "
                        + ", ".join(f"{k}={common.fmt(f[k])}" for k, _ in FIGURES)
                        + f", baseline={rep.baseline_s:.3f}, phases={rep.phases}"
                        + f", steady={rep.steady}"
                    )
    finally:
        await recorder.stop()
        with contextlib.suppress(Exception):
            await client.close()
        sync.close()
    summary = summarize(reps, variants)
    return {
        **common.run_info(),
        "variants": {v: {"pivot_retry_period": VARIANTS[v]} for v in variants},
        "lease_duration_s": LEASE_DURATION_S,
        "quiet_s": QUIET_S,
        "summary": summary,
        "reps": common.reps_json(reps),
    }


async def _async(value: bool) -> bool:
    return value


def api_cost(summary: dict[str, Any]) -> str:
    """What a shorter retry period costs the API server (client-go's leader election:
    a standby GETs the Lease every retry period plus jitter of up to 1.2 x; the leader
    renews it with one write every retry period)."""
    lines = ["API-server cost of the retry period (client-go leader election, per replica):"]
    for label, period in (("2s (default)", 2.0), ("500ms", 0.5)):
        lo, mean, hi = 1 / (2.2 * period), 1 / (1.6 * period), 1 / period
        lines.append(
            f"  {label:13} standby: {lo:.2f}-{hi:.2f} GET/s (mean {mean:.2f}); "
            f"leader: {1 / period:.2f} Lease writes/s"
        )
    for v, s in summary.items():
        got = {k: s[k]["median"] for k in s if k.endswith("_per_s") and s[k]["median"] is not None}
        if got:
            lines.append(
                f"  measured, {v}: " + ", ".join(f"{k}={x:.2f}" for k, x in sorted(got.items()))
            )
    return "\n".join(lines)


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--root", type=Path, default=Path("/tmp/khbench"))
    ap.add_argument("--host-port", type=int, default=16481)
    ap.add_argument(
        "--variants",
        type=lambda s: [v for v in s.split(",") if v],
        default=list(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default all, alternating)",
    )
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after the lab is up")
    ap.add_argument("--json", type=Path, help="write the raw numbers here (default: stdout)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab up (for debugging)")
    args = ap.parse_args()
    for v in args.variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    if os.geteuid() != 0:
        ap.error("the lab needs root")
    lab = Lab(root=args.root.resolve(), port=args.host_port)
    with common.lab_up(lab, keep=args.keep_lab):
        result = asyncio.run(bench(args, lab))
    variants = args.variants
    common.print_run_info(result)
    print(
        "variants: a = the article's manual procedure (lease 15s, retry 2s); "
        + "; ".join(
            f"{v} = kubehoist pivot --retry-period {VARIANTS[v] or '2s (default)'}"
            for v in variants
            if v != "a"
        )
    )
    print()
    print(table(result["summary"], variants))
    print()
    print(api_cost(result["summary"]))
    failed = [f"{r['variant']}#{r['rep']}: {r['error']}" for r in result["reps"] if r["error"]]
    return common.finish(result, failed, args.json)


if __name__ == "__main__":
    sys.exit(main())
