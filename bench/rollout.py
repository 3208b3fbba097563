#!/usr/bin/env python3
"""The rollout benchmark (issue 13): the reconcile outage of a rolling update of the
pivoted kube-controller-manager Deployment, per Kubernetes version, with and without
the release gate (`pivot --release-lease-on-exit`, v1.36 and later).

    sudo python3 bench/rollout.py [--versions v1.35.4,v1.36.3] [--reps 3]
        [--root /tmp/khbench-rollout] [--host-port 16491] [--keep] [--json FILE]

For each version a fresh lab (1 control plane, 2 workers) is brought up; for each
variant the static controller manager is pivoted (`--retry-period 500ms`, 2
replicas), then each repetition changes the Deployment's pod template (an annotation:
the same rolling update as a changed flag or image, maxSurge 1, maxUnavailable 0)
while a reconcile probe (`kubehoist.kube.probe`) runs, and waits until the rollout is
done and a new pod leads; the variant ends with `kubehoist rollback`.

Variants: `no-gate` and `reaper` (the guard installed: `guard install`, defaults) on
every version; `gate` where the version has
ControllerManagerReleaseLeaderElectionLockOnExit. The figure is the outage (the
longest probe latency from the change until 2 s after the rollout is complete, minus
the quiet baseline), and the Lease's gap: from the old leader's last renewal seen (or
its release) to the new holder seen. Times are this process's monotonic clock.

This is a benchmark that prints figures, not a test: it asserts nothing about them.
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
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease

from kubehoist import kubeversion
from kubehoist.components import KUBE_CONTROLLER_MANAGER
from kubehoist.kube.probe import ReconcileProbe
from kubehoist.pivot.refresh import rolled_out

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common
from bench.common import COMPONENT, NAMESPACE

QUIET_S = 10.0
AFTER_S = 2.0
ANNOTATION = "kubehoist.io/bench-rollout"


def variants(version: str) -> list[str]:
    """`no-gate` (neither), `reaper` (the guard installed: it releases the Lease of a
    leader whose container is certainly dead) on every version; `gate` where the
    version's controller manager can release its Lease on exit."""
    found = kubeversion.parse(version)
    since = KUBE_CONTROLLER_MANAGER.release_gate_since
    has_gate = found is not None and since is not None and found.at_least(*since)
    return ["no-gate", "reaper", "gate"] if has_gate else ["no-gate", "reaper"]


@dataclass
class Rep:
    version: str
    variant: str
    rep: int
    t_start: float = 0.0  # the pod template changed
    t_last_old_renew: float | None = None  # the old leader's last renewal seen
    t_release: float | None = None  # the Lease seen with an empty holder
    t_new_holder: float | None = None  # another holder seen
    t_rolled: float | None = None  # the rollout seen complete
    t_first_reconciled: float | None = None
    t_worst_reconciled: float | None = None
    leaders: list[str] = field(default_factory=list)  # holders seen in turn
    baseline_s: float = 0.0
    worst_s: float = 0.0
    outage_s: float = 0.0
    unreconciled: int = 0
    samples: int = 0
    probes: list[tuple[float, float | None]] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, float | None]:
        gap_from = self.t_release if self.t_release is not None else self.t_last_old_renew
        return {
            "outage_s": round(self.outage_s, 3),
            "lease_gap_s": common.diff(gap_from, self.t_new_holder),
            "change_to_new_holder_s": common.diff(self.t_start, self.t_new_holder),
            "rollout_s": common.diff(self.t_start, self.t_rolled),
            "leader_changes": float(max(0, len(self.leaders) - 1)),
        }


async def holder_of(client: AsyncClient) -> tuple[str, str]:
    lease = await client.get(Lease, COMPONENT, namespace=NAMESPACE)
    spec, meta = lease.spec, lease.metadata
    return ((spec.holderIdentity if spec else None) or ""), (
        (meta.resourceVersion if meta else None) or ""
    )


async def rolled(client: AsyncClient) -> bool:
    return rolled_out(await client.get(Deployment, COMPONENT, namespace=NAMESPACE))


async def one_rep(client: AsyncClient, version: str, variant: str, n: int) -> Rep:
    rep = Rep(version=version, variant=variant, rep=n)
    probe = ReconcileProbe(client)
    await probe.__aenter__()
    try:
        await asyncio.sleep(QUIET_S)
        old, rv = await holder_of(client)
        rep.leaders.append(old)
        rep.t_last_old_renew = time.monotonic()
        rep.t_start = time.monotonic()
        patch = {
            "spec": {"template": {"metadata": {"annotations": {ANNOTATION: f"{variant}-{n}"}}}}
        }
        await client.patch(Deployment, COMPONENT, patch, namespace=NAMESPACE)
        deadline = rep.t_start + common.WAIT_S
        while time.monotonic() < deadline:
            now_holder, now_rv = await holder_of(client)
            t = time.monotonic()
            if now_holder == rep.leaders[-1] and now_rv != rv and rep.t_new_holder is None:
                rep.t_last_old_renew = t
            if not now_holder and rep.t_release is None:
                rep.t_release = t
            if now_holder and now_holder != rep.leaders[-1]:
                rep.leaders.append(now_holder)
                rep.t_new_holder = rep.t_new_holder or t
            rv = now_rv
            if rep.t_rolled is None and await rolled(client):
                rep.t_rolled = time.monotonic()
            if rep.t_rolled is not None and now_holder and now_holder != old:
                break
            await asyncio.sleep(0.05)
        else:
            rep.error = "rollout or new leader not seen in time"
        await asyncio.sleep(AFTER_S + 3)
        stopped = time.monotonic()
        await probe.stop(drain=10)
        rep.t_first_reconciled = common.first_reconciled(
            probe.samples(), rep.t_new_holder or rep.t_start
        )
        common.score_window(
            rep,
            probe.samples(),
            start=rep.t_start,
            stopped=stopped,
            origin=rep.t_start,
            quiet_s=QUIET_S,
            after_s=AFTER_S,
        )
    finally:
        await probe.stop()
        await probe.cleanup()
    return rep


def pivot(lab: common.Lab, variant: str) -> None:
    args = [
        "pivot", "--kubeconfig", str(lab.kubeconfig), "--host-root", str(lab.node_root),
        "--retry-period", "500ms", "--timeout", "180",
    ]  # fmt: skip
    if variant == "gate":
        args.append("--release-lease-on-exit")
    common.run(common.kubehoist_cmd(*args))
    if variant == "reaper":
        common.run(
            common.kubehoist_cmd(
                "guard", "install", "--kubeconfig", str(lab.kubeconfig), "--timeout", "180"
            )
        )


def rollback(lab: common.Lab) -> None:
    common.run(
        common.kubehoist_cmd("guard", "uninstall", "--kubeconfig", str(lab.kubeconfig)),
        check=False,
    )
    common.run(
        common.kubehoist_cmd("rollback", "--kubeconfig", str(lab.kubeconfig), "--timeout", "180"),
        check=False,
    )


async def run_version(lab: common.Lab, version: str, reps: int) -> list[Rep]:
    out: list[Rep] = []
    config = KubeConfig.from_file(str(lab.kubeconfig))
    for variant in variants(version):
        common.log(f"{version} {variant}: pivot")
        pivot(lab, variant)
        client = AsyncClient(config, trust_env=False)
        try:
            for n in range(1, reps + 1):
                common.log(f"{version} {variant}: rollout {n}/{reps}")
                try:
                    rep = await one_rep(client, version, variant, n)
                except (ApiError, OSError, RuntimeError, ValueError) as exc:
                    rep = Rep(version=version, variant=variant, rep=n, error=str(exc))
                common.log(f"  {rep.figures()}" + (f" error: {rep.error}" if rep.error else ""))
                out.append(rep)
        finally:
            await client.close()
            common.log(f"{version} {variant}: rollback")
            rollback(lab)
    return out


def lab_up(lab: common.Lab, version: str) -> None:
    common.run(common.kubehoist_cmd("lab", "down", "--purge", "--root", str(lab.root)), check=False)
    common.run(common.kubehoist_cmd("lab", "build", "--kubernetes-version", version), timeout=3600)
    common.log(f"lab up {version} at {lab.root} (port {lab.port})")
    common.run(
        common.kubehoist_cmd(
            "lab", "up", "--root", str(lab.root), "--host-port", str(lab.port),
            "--workers", "2", "--kubernetes-version", version,
        )
    )  # fmt: skip


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--versions", default="v1.35.4,v1.36.3")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--root", type=Path, default=Path("/tmp/khbench-rollout"))
    p.add_argument("--host-port", type=int, default=16491)
    p.add_argument("--keep", action="store_true", help="Leave the last lab up.")
    p.add_argument("--json", type=Path, help="Write the raw numbers here.")
    args = p.parse_args()
    lab = common.Lab(root=args.root.resolve(), port=args.host_port)
    reps: list[Rep] = []
    versions = [v for v in args.versions.split(",") if v]
    try:
        for i, version in enumerate(versions):
            lab_up(lab, version)
            reps += asyncio.run(run_version(lab, version, args.reps))
            if i + 1 < len(versions) or not args.keep:
                common.run(
                    common.kubehoist_cmd("lab", "down", "--purge", "--root", str(lab.root)),
                    check=False,
                )
    finally:
        if not args.keep:
            common.run(
                common.kubehoist_cmd("lab", "down", "--purge", "--root", str(lab.root)),
                check=False,
            )
    result: dict[str, Any] = {**common.run_info(), "reps": common.reps_json(reps)}
    common.print_run_info(result)
    rows = [["version / variant", "n", "outage s (med)", "max", "lease gap s (med)", "max"]]
    for version in versions:
        for variant in variants(version):
            mine = [r for r in reps if r.version == version and r.variant == variant]
            ok = [r for r in mine if r.error is None]
            out = common.med_max([r.figures()["outage_s"] for r in ok])
            gap = common.med_max([r.figures()["lease_gap_s"] for r in ok])
            rows.append(
                [
                    f"{version} {variant}",
                    str(len(ok)),
                    common.fmt(out["median"]),
                    common.fmt(out["max"]),
                    common.fmt(gap["median"]),
                    common.fmt(gap["max"]),
                ]
            )
    print(common.render_table(rows))
    failed = [f"{r.version} {r.variant} #{r.rep}: {r.error}" for r in reps if r.error]
    return common.finish(result, failed, args.json)


if __name__ == "__main__":
    sys.exit(main())
