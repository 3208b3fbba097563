#!/usr/bin/env python3
"""The chaos benchmark: rounds of faults on a pivoted, guarded HA lab, each followed by
recovery and the strict oracle (`kubehoist.lab.oracle`).

    sudo python3 bench/chaos.py [--rounds 14] [--seed 1] [--kinds K1,K2,...] \\
        [--root /tmp/kh-chaos] [--host-port 16701] [--json PATH]

One lab (`lab up --control-planes 3 --workers 2`), `kubehoist pivot --replicas 2`,
`kubehoist guard install --settle 10 --grace 20`, then a fixed set of objects (4
ConfigMaps, 2 Deployments of 0 replicas in namespace `chaos-keep`) that must all be
there, with the same UIDs, after every round. The rounds draw their fault from the
kinds (`--kinds`, default all) in blocks: every block is each kind once, in an order
shuffled by `--seed`, so N blocks are N rounds of every kind.

Fault kinds (the leader: the Deployment pod holding the controller manager's Lease):

leader-sigkill      the leader's container process SIGKILLed (a crash)
leader-freeze       the leader's process SIGSTOPped until another holds the Lease, then
                    SIGCONT (journaled in <root>/faults/freezes.jsonl for the oracle)
leader-delete       the leader's pod deleted (graceful)
rollout             a Deployment rollout (a pod template annotation) while it leads
kubelet-kill        the leader's node's kubelet SIGKILLed (its supervisor restarts it
                    after 10 s, as systemd's RestartSec)
containerd-kill     the leader's node's containerd SIGKILLed (restarted after 5 s)
node-netcut         the leader's node cut off the LAN (its veth's link down) until
                    another holds the Lease, then back
apiserver-restart   one kube-apiserver stopped, 20 s, started
                    (kubehoist.lab.faults)
etcd-restart        etcd restarted (kubehoist.lab.faults)
guard-leader-kill   every replica lost (scale to 0) and the guards' leader's container
                    SIGKILLed while it falls back (just before, or just after, the
                    fallback manifest is back), then scaled back to 2
scale-to-zero       every replica lost by scaling to 0; back to 2 once the fallback leads
unpullable-image    every replica lost to a rollout of an image that cannot be pulled
                    (strategy Recreate); the image restored once the fallback leads
cold-start          the whole lab stopped and started (`lab down`, `lab up`)
pivot-rollback      `guard uninstall`; `kubehoist rollback` SIGKILLed at a random moment
                    and run again; `kubehoist pivot` likewise; `guard install`

Per round: time from the fault to a valid leader (the first renewal of the Lease seen,
by a holder other than those the fault took away) and to the first reconcile (a
`ReconcileProbe` — a Deployment of 0 replicas every 250 ms, timed until its ReplicaSet
exists — answered after that renewal); whether the lab settled again (a Deployment pod
leading, 2 replicas Ready, every guard Ready, no fallback in place) within 5 minutes;
the oracle's new overlaps (two leaders / a frozen leader's, apart), the guard's
violations, objects lost, and the manifests (every control plane's parked manifest the
original bytes; after the rollback of pivot-rollback, in place). Times are this
process's monotonic clock when a watch event or a probe's ReplicaSet arrives.

This is a benchmark that prints figures, not a test: it asserts nothing; it exits 1 if
a round did not recover, lost an object, left a manifest changed, or the oracle found
two leaders or a guard violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod

from kubehoist.kube import leases
from kubehoist.kube.probe import ReconcileProbe, zero_replica_deployment
from kubehoist.lab import faults as labfaults
from kubehoist.lab import freezes, instances, leaderlogs, leaders, oracle, podproc
from kubehoist.lab import node as labnode
from kubehoist.lab.binaries import locate
from kubehoist.lab.spec import LabNode, LabSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common
from bench.common import COMPONENT, NAMESPACE, Lab

GUARD_LEASE = f"kubehoist-guard-{COMPONENT}"
GUARD_POD = f"kubehoist-guard-{COMPONENT}-"
MANIFEST = f"{COMPONENT}.yaml"
REPLICAS = 2
SETTLE_S = 10.0  # guard install --settle
GRACE_S = 20.0  # guard install --grace
RECOVER_S = 300.0  # a round that has not settled by then did not recover
LEADER_S = 300.0  # nor one without a valid leader by then
SWEEPS_S = 2.5  # two sweeps of the log keeper: the last lines and ends are archived
KEEP_NS = "chaos-keep"
KEEP_CONFIGMAPS = 4
KEEP_DEPLOYMENTS = 2
CONTAINERD_OUTAGE_S = 30.0  # after a containerd kill: its restart (5 s) and catching up

KINDS = (
    "leader-sigkill",
    "leader-freeze",
    "leader-delete",
    "rollout",
    "kubelet-kill",
    "containerd-kill",
    "node-netcut",
    "apiserver-restart",
    "etcd-restart",
    "guard-leader-kill",
    "scale-to-zero",
    "unpullable-image",
    "cold-start",
    "pivot-rollback",
)


def schedule(kinds: Sequence[str], rounds: int, seed: int) -> list[str]:
    """`rounds` kinds in blocks of every kind once, each block shuffled by `seed`."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < rounds:
        block = list(kinds)
        rng.shuffle(block)
        out.extend(block)
    return out[:rounds]


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


# --- one round ---------------------------------------------------------------------------
@dataclass
class Round:
    n: int
    kind: str
    status: str = ""  # "recovered", "not recovered", "error"
    detail: str = ""
    node: str = ""  # where the fault hit
    old_holder: str = ""
    new_holder: str = ""
    t0: float = 0.0  # the fault (monotonic)
    t0_wall: str = ""
    t_heal: float | None = None  # the fault undone (for faults with an end)
    t_valid: float | None = None  # first renewal by a holder the fault did not take away
    t_reconciled: float | None = None  # first probe answered after t_valid
    t_settled: float | None = None
    outage_s: float | None = None  # the longest a probe sent in the round waited
    overlaps: list[str] = field(default_factory=list)  # two leaders (kubehoist's to answer)
    frozen: list[str] = field(default_factory=list)  # a frozen leader's (client-go's)
    violations: list[str] = field(default_factory=list)  # the guard's
    lost: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # manifests not restored
    exit_stamp_late_ms: float | None = None  # leader-sigkill: kill -> runtime's finishedAt
    tolerance_ms: float | None = None  # the oracle's: the measurement error of the run so far
    killed_container: str = ""  # the container the fault ended (SIGKILL, SIGSTOP)
    killed_at: str = ""  # leader-sigkill: when
    error: str | None = None

    def leader_s(self) -> float | None:
        return common.diff(self.t0, self.t_valid)

    def reconcile_s(self) -> float | None:
        return common.diff(self.t0, self.t_reconciled)

    def settled_s(self) -> float | None:
        return common.diff(self.t0, self.t_settled)

    def clean(self) -> bool:
        """Recovered, nothing lost, files restored, no two leaders, no violation."""
        return (
            self.status == "recovered"
            and not self.overlaps
            and not self.violations
            and not self.lost
            and not self.files
        )


class Recorder(common.Recorder):
    """Watches the controller manager's Lease and the guards' Lease."""

    async def start(self) -> None:
        await self._start(
            lambda: self._lease_once(COMPONENT), lambda: self._lease_once(GUARD_LEASE)
        )


def _pod_of(holder: str) -> str:
    return leases.holder_node(holder) if holder else ""


def daemon_pid(spec: LabSpec, node: LabNode, name: str) -> int:
    """The host pid of a node's daemon (`kubelet`, `containerd`): a child of the
    node's init with that command name."""
    init = labnode.init_pid(spec, node)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == init and comm == name:
            return int(entry.name)
    raise RuntimeError(f"node {node.name}: no {name} process under its init {init}")


def _now_wall() -> datetime:
    return datetime.now(UTC)


# --- the run ---------------------------------------------------------------------------------
class Chaos:
    def __init__(self, lab: Lab, args: argparse.Namespace, done: Sequence[Round] = ()) -> None:
        self.lab = lab
        self.args = args
        self.spec = LabSpec.load(lab.root)
        self.done = list(done)  # a resumed run's rounds so far
        # The faults' own draws (which node, when to kill); a resumed run draws anew.
        self.rng = random.Random(f"{args.seed}/{len(done)}" if done else args.seed)
        self.client = AsyncClient(KubeConfig.from_file(str(lab.kubeconfig)), trust_env=False)
        self.recorder = Recorder(self.client)
        self.expected: dict[str, bytes] = {}  # node -> the original manifest
        self.keep: dict[str, str] = {}  # "kind/name" -> uid
        self.seen_overlaps: set[tuple[str, str, str]] = set()
        self.seen_violations: set[str] = set()
        self.probe: ReconcileProbe | None = None
        self.samples: list[Any] = []
        self.setup: dict[str, float] = {}
        # containerd down: node, when
        self.outages: list[tuple[str, datetime, datetime]] = containerd_outages(done)
        # the latest stamp measured so far (measured_error_ms)
        self.max_late_ms = max((r.tolerance_ms or 0.0 for r in done), default=0.0)
        json_path: Path | None = getattr(args, "json", None)
        self.partial = json_path.with_name(json_path.name + ".partial") if json_path else None

    # --- helpers ----------------------------------------------------------------------
    def kubehoist(self, *args: str, timeout: float = 600) -> str:
        return common.run(
            common.kubehoist_cmd(*args, "--kubeconfig", str(self.lab.kubeconfig)),
            timeout=timeout,
        )

    def kubectl(self, *args: str) -> str:
        kubectl = str(locate().path("kubectl"))
        return common.run([kubectl, "--kubeconfig", str(self.lab.kubeconfig), *args], timeout=120)

    def node_roots(self) -> dict[str, Path]:
        return {n.name: n.root(self.spec.root) for n in self.spec.control_planes}

    def fallbacks_in_place(self) -> list[str]:
        return [
            n.name
            for n in self.spec.control_planes
            if (n.manifests_dir(self.spec.root) / MANIFEST).exists()
        ]

    async def pods(self) -> list[Pod]:
        return [p async for p in self.client.list(Pod, namespace=NAMESPACE)]

    async def leader_pod(self) -> Pod:
        name = _pod_of(self.recorder.holder())
        return await self.client.get(Pod, name, namespace=NAMESPACE)

    async def settled(self) -> bool:
        """A Deployment pod leads (renewed within 5 s), REPLICAS Ready, every guard
        Ready and one of them holding the guards' Lease, no fallback in place."""
        try:
            pods = await self.pods()
        except Exception:
            return False
        alive = [p for p in pods if p.metadata and not p.metadata.deletionTimestamp]
        names = {p.metadata.name for p in alive if p.metadata}
        dep = [
            p
            for p in alive
            if p.metadata
            and (p.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "kubehoist"
            and (p.metadata.name or "").startswith(f"{COMPONENT}-")
            and common.pod_ready(p)
        ]
        guards = [
            p
            for p in alive
            if p.metadata and (p.metadata.name or "").startswith(GUARD_POD) and common.pod_ready(p)
        ]
        seen = self.recorder.of(COMPONENT)
        fresh = bool(seen) and time.monotonic() - seen[-1].at < 5.0
        holder = self.recorder.holder()
        return (
            fresh
            and _pod_of(holder) in names
            and any(p.metadata and p.metadata.name == _pod_of(holder) for p in dep)
            and len(dep) >= REPLICAS
            and len(guards) == len(self.spec.control_planes)
            and bool(self.recorder.holder(GUARD_LEASE))
            and not self.fallbacks_in_place()
        )

    async def wait_settled(self, timeout: float = RECOVER_S) -> None:
        await common.wait_for("a settled lab", self.settled, timeout, every=0.5)

    async def start_probe(self) -> None:
        self.probe = ReconcileProbe(self.client)
        await self.probe.__aenter__()

    async def stop_probe(self) -> None:
        if self.probe is None:
            return
        probe, self.probe = self.probe, None
        with contextlib.suppress(Exception):
            await probe.stop(drain=3)
        self.samples.extend(probe.samples())
        with contextlib.suppress(Exception):
            await probe.cleanup()

    def all_samples(self) -> list[Any]:
        return [*self.samples, *(self.probe.samples() if self.probe else [])]

    # --- setup ---------------------------------------------------------------------------
    async def prepare(self) -> None:
        await self.recorder.start()
        try:
            await self.client.get(Deployment, COMPONENT, namespace=NAMESPACE)
            pivoted = True
        except ApiError:
            pivoted = False
        if pivoted:
            common.log("already pivoted (reused lab)")
            for n in self.spec.control_planes:
                parked = n.root(self.spec.root) / oracle.PARKED_DIR / MANIFEST
                self.expected[n.name] = parked.read_bytes()
        else:
            await common.wait_for(
                "a static controller manager to lead",
                lambda: _async_true(bool(self.recorder.holder())),
                300,
            )
            for n in self.spec.control_planes:
                self.expected[n.name] = (n.manifests_dir(self.spec.root) / MANIFEST).read_bytes()
            common.log(f"kubehoist pivot --replicas {REPLICAS}")
            t = time.monotonic()
            await asyncio.to_thread(self._pivot)
            self.setup["pivot_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        common.log("kubehoist guard install")
        await asyncio.to_thread(self._guard_install)
        self.setup["guard_install_s"] = round(time.monotonic() - t, 1)
        await self._keep_objects(create=not self.done)
        if self.done:  # what the oracle finds now was reported in the rounds before
            await asyncio.to_thread(self._mark_judged)
        await self.wait_settled()

    def _pivot_argv(self) -> list[str]:
        root = str(self.spec.api_node.root(self.spec.root))
        return ["pivot", "--host-root", root, "--replicas", str(REPLICAS), "--timeout", "180"]

    def _pivot(self) -> None:
        self.kubehoist(*self._pivot_argv())

    def _guard_install(self) -> None:
        self.kubehoist("guard", "install", "--settle", f"{SETTLE_S:g}", "--grace", f"{GRACE_S:g}")

    async def _keep_objects(self, *, create: bool) -> None:
        """The objects that must outlive the run, created unless `create` is false (a
        resumed run: they must be there already, or one was lost in between)."""
        if create:
            with contextlib.suppress(ApiError):
                await self.client.create(Namespace(metadata=ObjectMeta(name=KEEP_NS)))
        for i in range(KEEP_CONFIGMAPS):
            name = f"keep-{i}"
            cm = ConfigMap(metadata=ObjectMeta(name=name, namespace=KEEP_NS), data={"n": str(i)})
            if create:
                with contextlib.suppress(ApiError):
                    await self.client.create(cm)
            got = await self.client.get(ConfigMap, name, namespace=KEEP_NS)
            self.keep[f"configmap/{name}"] = str(got.metadata.uid if got.metadata else "")
        for i in range(KEEP_DEPLOYMENTS):
            name = f"keep-{i}"
            labels = {"app": name}
            dep = zero_replica_deployment(name, KEEP_NS, selector=labels)
            if create:
                with contextlib.suppress(ApiError):
                    await self.client.create(dep)
            got_dep = await self.client.get(Deployment, name, namespace=KEEP_NS)
            self.keep[f"deployment/{name}"] = str(got_dep.metadata.uid if got_dep.metadata else "")

    async def lost_objects(self) -> list[str]:
        lost = []
        for key, uid in self.keep.items():
            kind, name = key.split("/", 1)
            res: Any = ConfigMap if kind == "configmap" else Deployment
            try:

                async def read(res: Any = res, name: str = name) -> Any:
                    return await self.client.get(res, name, namespace=KEEP_NS)

                got = await _transient_retried(read)
            except ApiError as exc:
                lost.append(f"{key}: {exc.status.code}")
                continue
            if (got.metadata.uid if got.metadata else "") != uid:
                lost.append(f"{key}: recreated (uid changed)")
        return lost

    # --- the faults ------------------------------------------------------------------------
    def _fault_start(self, r: Round) -> None:
        r.t0 = time.monotonic()
        r.t0_wall = instances.iso(_now_wall()) or ""

    async def _leader(self, r: Round) -> tuple[Pod, str]:
        holder = self.recorder.holder()
        pod = await self.client.get(Pod, _pod_of(holder), namespace=NAMESPACE)
        r.old_holder = holder
        r.node = str(pod.spec.nodeName) if pod.spec else ""
        return pod, holder

    def _exit_recorded(self, container_id: str) -> bool:
        return any(
            i.container_id == container_id and i.finished_at is not None
            for i in instances.find_instances(self.spec.root, COMPONENT)
        )

    async def _await_exit(self, container_id: str, timeout: float = 60) -> None:
        """Until the log keeper has the container's end: the oracle then judges a story
        whose ends are known."""
        await common.wait_for(
            f"the end of container {container_id[:12]} in the archive",
            lambda: asyncio.to_thread(self._exit_recorded, container_id),
            timeout,
            every=1.0,
        )

    async def _await_other_holder(self, r: Round, timeout: float = LEADER_S) -> None:
        await common.wait_for(
            "another holder",
            lambda: _async_true(self.recorder.holder() not in ("", r.old_holder)),
            timeout,
        )

    async def f_leader_sigkill(self, r: Round) -> set[str]:
        pod, holder = await self._leader(r)
        cid = podproc.container_id(pod, COMPONENT)
        pid = await asyncio.to_thread(podproc.container_pid, self.spec, pod, COMPONENT)
        os.kill(pid, signal.SIGKILL)
        kill_wall = _now_wall()
        self._fault_start(r)
        r.detail = f"{_pod_of(holder)} on {r.node}, container {cid[:12]}"
        r.killed_container, r.killed_at = cid, instances.iso(kill_wall) or ""
        return {holder}

    async def f_leader_freeze(self, r: Round) -> set[str]:
        pod, holder = await self._leader(r)
        cid = podproc.container_id(pod, COMPONENT)
        pid = await asyncio.to_thread(podproc.container_pid, self.spec, pod, COMPONENT)
        stopped = _now_wall()
        freeze = freezes.Freeze(container_id=cid, stopped=stopped, node=r.node, pod=_pod_of(holder))
        freezes.record_freeze(self.spec.root, freeze)
        os.kill(pid, signal.SIGSTOP)
        self._fault_start(r)
        try:
            await self._await_other_holder(r, timeout=120)
            await asyncio.sleep(2.0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            resumed = _now_wall()
            freezes.record_freeze(
                self.spec.root,
                freezes.Freeze(
                    container_id=cid,
                    stopped=stopped,
                    resumed=resumed,
                    node=r.node,
                    pod=_pod_of(holder),
                ),
            )
            r.t_heal = time.monotonic()
        r.detail = f"{_pod_of(holder)} on {r.node} frozen {r.t_heal - r.t0:.1f}s"
        r.killed_container = cid
        return {holder}

    async def f_leader_delete(self, r: Round) -> set[str]:
        _, holder = await self._leader(r)
        await self.client.delete(Pod, _pod_of(holder), namespace=NAMESPACE)
        self._fault_start(r)
        r.detail = f"{_pod_of(holder)} on {r.node}"
        return {holder}

    async def f_rollout(self, r: Round) -> set[str]:
        _, holder = await self._leader(r)
        stamp = _now_wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubehoist.dev/chaos-rollout": f"{r.n}-{stamp}"}}
                }
            }
        }
        await asyncio.to_thread(
            self.kubectl,
            "-n",
            NAMESPACE,
            "patch",
            f"deployment/{COMPONENT}",
            "-p",
            json.dumps(patch),
        )
        self._fault_start(r)
        r.detail = f"while {_pod_of(holder)} led"
        return {holder}

    async def _kill_daemon(self, r: Round, name: str) -> set[str]:
        await self._leader(r)
        node = self.spec.node(r.node)
        pid = await asyncio.to_thread(daemon_pid, self.spec, node, name)
        os.kill(pid, signal.SIGKILL)
        self._fault_start(r)

        def restarted() -> bool:
            try:
                return daemon_pid(self.spec, node, name) != pid
            except RuntimeError:
                return False

        # Healed once its supervisor (systemd's part) has started it again.
        await common.wait_for(
            f"{name} on {r.node} restarted", lambda: asyncio.to_thread(restarted), 60, every=0.5
        )
        r.t_heal = time.monotonic()
        back = r.t_heal - r.t0
        r.detail = f"{name} {pid} on {r.node} (the leader's node), back after {back:.1f}s"
        return set()  # the leader lives on

    async def f_kubelet_kill(self, r: Round) -> set[str]:
        return await self._kill_daemon(r, "kubelet")

    async def f_containerd_kill(self, r: Round) -> set[str]:
        excluded = await self._kill_daemon(r, "containerd")
        # Lines written while containerd is down are read (and stamped) when it is back.
        start = _now_wall()
        self.outages.append((r.node, start, start + timedelta(seconds=CONTAINERD_OUTAGE_S)))
        return excluded

    async def f_node_netcut(self, r: Round) -> set[str]:
        _, holder = await self._leader(r)
        node = self.spec.node(r.node)
        link = ["ip", "-n", self.spec.lan_netns, "link", "set", node.veth]
        await asyncio.to_thread(common.run, [*link, "down"])
        self._fault_start(r)
        try:
            await self._await_other_holder(r, timeout=120)
            await asyncio.sleep(2.0)
        finally:
            await asyncio.to_thread(common.run, [*link, "up"])
            r.t_heal = time.monotonic()
        r.detail = f"{r.node} off the LAN {r.t_heal - r.t0:.1f}s"
        return {holder}

    async def f_apiserver_restart(self, r: Round) -> set[str]:
        node = self.rng.choice(self.spec.control_planes)
        r.node = node.name
        await asyncio.to_thread(labfaults.apiserver_stop, self.spec, node)
        self._fault_start(r)
        await asyncio.sleep(20)
        await asyncio.to_thread(labfaults.apiserver_start, self.spec, node)
        r.t_heal = time.monotonic()
        back = r.t_heal - r.t0
        r.detail = f"kube-apiserver on {node.name} stopped; /readyz 200 again {back:.1f}s later"
        return set()

    async def f_etcd_restart(self, r: Round) -> set[str]:
        node = self.rng.choice(self.spec.control_planes)
        r.node = node.name
        self._fault_start(r)
        await asyncio.to_thread(labfaults.etcd_restart, self.spec, node)
        r.t_heal = time.monotonic()
        r.detail = f"etcd on {node.name} stopped; a new one ready after {r.t_heal - r.t0:.1f}s"
        return set()

    async def _scale(self, replicas: int) -> None:
        await asyncio.to_thread(
            self.kubectl,
            "-n",
            NAMESPACE,
            "scale",
            f"deployment/{COMPONENT}",
            f"--replicas={replicas}",
        )

    async def _static_leads(self) -> bool:
        holder = self.recorder.holder()
        cps = [n.name for n in self.spec.control_planes]
        # A static pod's identity names the node's hostname, which may be its FQDN.
        return bool(holder) and leases.holder_node(holder, cps) in cps

    async def _total_loss(
        self,
        r: Round,
        break_it: Callable[[], Awaitable[None]],
        fix_it: Callable[[], Awaitable[None]],
        during: Callable[[], Awaitable[None]] | None = None,
    ) -> set[str]:
        _, holder = await self._leader(r)
        await break_it()
        self._fault_start(r)
        try:
            if during is not None:
                await during()
            await common.wait_for("the fallback static pod to lead", self._static_leads, 180)
            r.new_holder = self.recorder.holder()
        finally:  # also when the fallback did not come: the next rounds need the fix
            await fix_it()
            r.t_heal = time.monotonic()
        return {holder}

    async def f_scale_to_zero(self, r: Round) -> set[str]:
        r.detail = "scaled to 0, back to 2 once the fallback led"
        return await self._total_loss(r, lambda: self._scale(0), lambda: self._scale(REPLICAS))

    async def f_unpullable_image(self, r: Round) -> set[str]:
        dep = await self.client.get(Deployment, COMPONENT, namespace=NAMESPACE)
        assert dep.spec is not None and dep.spec.template.spec is not None
        image = dep.spec.template.spec.containers[0].image
        strategy = dep.spec.strategy.to_dict() if dep.spec.strategy else {}

        def patch(body: dict[str, Any]) -> None:
            self.kubectl(
                "-n", NAMESPACE, "patch", f"deployment/{COMPONENT}", "-p", json.dumps(body)
            )

        def container(img: str) -> dict[str, Any]:
            return {
                "spec": {"template": {"spec": {"containers": [{"name": COMPONENT, "image": img}]}}}
            }

        async def break_it() -> None:
            await asyncio.to_thread(
                patch, {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}}
            )
            await asyncio.to_thread(
                patch, container("registry.invalid/kube-controller-manager:broken")
            )

        async def fix_it() -> None:
            await asyncio.to_thread(patch, container(str(image)))
            await asyncio.to_thread(patch, {"spec": {"strategy": strategy}})

        r.detail = "rollout to registry.invalid/..., restored once the fallback led"
        return await self._total_loss(r, break_it, fix_it)

    async def f_guard_leader_kill(self, r: Round) -> set[str]:
        when = self.rng.choice(("before", "after"))

        async def during() -> None:
            if when == "after":
                await common.wait_for(
                    "a fallback manifest", lambda: _async_true(bool(self.fallbacks_in_place())), 120
                )
            else:
                await common.wait_for("no replica Ready", lambda: self._no_replica_ready(), 120)
            guard_holder = self.recorder.holder(GUARD_LEASE)
            node = guard_holder.split("_", 1)[0]
            pod = await self.client.get(Pod, f"{GUARD_POD}{node}", namespace=NAMESPACE)
            await asyncio.to_thread(podproc.kill_container, self.spec, pod, "guard", signal.SIGKILL)
            r.detail = f"guards' leader on {node} SIGKILLed {when} its fallback"
            r.node = node

        return await self._total_loss(
            r, lambda: self._scale(0), lambda: self._scale(REPLICAS), during
        )

    async def _no_replica_ready(self) -> bool:
        pods = await common.deployment_pods(self.client)
        return not any(
            common.pod_ready(p) for p in pods if p.metadata and not p.metadata.deletionTimestamp
        )

    async def f_cold_start(self, r: Round) -> set[str]:
        before = {e.holder for e in self.recorder.of(COMPONENT) if e.holder}
        r.old_holder = self.recorder.holder()
        await self.stop_probe()
        root = str(self.spec.root)
        self._fault_start(r)
        await asyncio.to_thread(common.run, common.kubehoist_cmd("lab", "down", "--root", root))
        await asyncio.to_thread(common.run, common.kubehoist_cmd("lab", "up", "--root", root))
        r.t_heal = time.monotonic()
        r.detail = f"lab down + up {r.t_heal - r.t0:.0f}s"
        await common.wait_for("the API server", self._api_up, 120)
        await self.start_probe()
        return before

    async def _api_up(self) -> bool:
        try:
            await self.client.get(Namespace, KEEP_NS)
        except Exception:
            return False
        return True

    async def _killed_midway(self, what: str, args: Sequence[str], at: float) -> str:
        """Run `kubehoist <args>`, SIGKILL it `at` seconds in (if still running), then
        run it again to the end. Returns what happened."""
        cmd = common.kubehoist_cmd(*args, "--kubeconfig", str(self.lab.kubeconfig))
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(proc.wait(), timeout=at)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            await asyncio.to_thread(self.kubehoist, *args)
            return f"{what} SIGKILLed at {at:.1f}s, run again"
        if proc.returncode != 0:  # failed by itself: run again, as a user would
            await asyncio.to_thread(self.kubehoist, *args)
            return f"{what} exited {proc.returncode} before {at:.1f}s, run again"
        return f"{what} finished before {at:.1f}s"

    async def f_pivot_rollback(self, r: Round) -> set[str]:
        notes = []
        await asyncio.to_thread(self.kubehoist, "guard", "uninstall")
        await common.wait_for("the guard pods gone", self._no_guard_pods, 120)
        at = round(self.rng.uniform(1.0, 20.0), 1)
        notes.append(await self._killed_midway("rollback", ["rollback", "--timeout", "180"], at))
        # Rolled back: every manifest in place, the original bytes.
        for v in oracle.check_manifests(self.node_roots(), MANIFEST, self.expected, parked=False):
            r.files.append(f"after rollback: {v.text}")
        await common.wait_for("a static controller manager to lead", self._static_leads, 180)
        r.old_holder = self.recorder.holder()
        at = round(self.rng.uniform(1.0, 30.0), 1)
        self._fault_start(r)
        notes.append(
            await self._killed_midway(
                "pivot",
                self._pivot_argv(),
                at,
            )
        )
        await asyncio.to_thread(self._guard_install)
        r.t_heal = time.monotonic()
        r.detail = "; ".join(notes)
        return {r.old_holder}

    async def _no_guard_pods(self) -> bool:
        return not [
            p
            for p in await self.pods()
            if p.metadata and (p.metadata.name or "").startswith(GUARD_POD)
        ]

    # --- a round -----------------------------------------------------------------------------
    async def one_round(self, r: Round) -> None:
        """Fault, recovery, oracle; fills in `r` as it goes (so that a round that fails
        keeps what it had)."""
        kind = r.kind
        await self.wait_settled()
        await self.start_probe()
        fault = getattr(self, "f_" + kind.replace("-", "_"))
        excluded: set[str] = await fault(r)
        # A valid leader: the first renewal by a holder the fault did not take away.
        seen = None

        async def valid() -> bool:
            nonlocal seen
            seen = self.recorder.first_lease(r.t0, lambda h: bool(h) and h not in excluded)
            return seen is not None

        await common.wait_for("a valid leader", valid, LEADER_S)
        assert seen is not None
        r.t_valid, r.new_holder = seen.at, r.new_holder or seen.holder

        async def reconciled() -> bool:
            assert r.t_valid is not None
            r.t_reconciled = common.first_reconciled(self.all_samples(), r.t_valid)
            return r.t_reconciled is not None

        await common.wait_for("the first reconcile", reconciled, LEADER_S)
        await self.wait_settled()
        r.t_settled = time.monotonic()
        if r.killed_container:
            await self._await_exit(r.killed_container)
        await self.stop_probe()
        r.outage_s = longest_wait(self.samples, until=time.monotonic())
        self.samples.clear()
        await asyncio.sleep(SWEEPS_S)
        await self.judge(r)
        r.status = "recovered"

    def measured_error_ms(self, r: Round) -> float:
        """The measurement error of this run so far, in ms: the latest a log line or a
        killed leader's exit was stamped (`line_stamp_lateness`, kill -> `finishedAt`),
        at least `leaders.TOLERANCE_MS` (what it is on a machine where containerd keeps
        up). On a CPU-starved machine it is larger; the oracle is then run with it, and
        the run says so (`tolerance_ms` per round)."""
        if r.killed_container and r.killed_at:
            killed_at = datetime.fromisoformat(r.killed_at)
            ended = [
                i.finished_at
                for i in instances.find_instances(self.spec.root, COMPONENT)
                if i.container_id == r.killed_container
                and i.finished_at
                and not i.finished_at_estimated
            ]
            if ended:
                r.exit_stamp_late_ms = round((ended[0] - killed_at).total_seconds() * 1000, 1)
                self.max_late_ms = max(self.max_late_ms, r.exit_stamp_late_ms)
        stamps = line_stamp_lateness(self.spec.root, self.outages)
        self.max_late_ms = max(self.max_late_ms, float(stamps.get("max_ms", 0.0)))
        return max(float(leaders.TOLERANCE_MS), self.max_late_ms)

    def _mark_judged(self) -> None:
        """A resumed run: the overlaps and violations in the lab's logs so far are the
        earlier rounds' (in their records), not the next round's."""
        tolerance = max(float(leaders.TOLERANCE_MS), self.max_late_ms) / 1000
        self._new_findings(oracle.judge(self.spec.root, COMPONENT, tolerance=tolerance))

    def _new_findings(self, judged: oracle.OracleReport) -> tuple[list[leaders.Overlap], list[str]]:
        """The overlaps and violations in `judged` not reported before (the oracle
        judges the whole run each time)."""
        overlaps = []
        for o in (*judged.leaders.overlaps, *judged.leaders.frozen):
            key = (o.first.instance.name, o.second.instance.name, instances.iso(o.start) or "")
            if key not in self.seen_overlaps:
                self.seen_overlaps.add(key)
                overlaps.append(o)
        violations = [v.text for v in judged.violations if v.text not in self.seen_violations]
        self.seen_violations.update(violations)
        return overlaps, violations

    async def judge(self, r: Round) -> None:
        r.tolerance_ms = round(await asyncio.to_thread(self.measured_error_ms, r), 1)
        judged = await asyncio.to_thread(
            oracle.judge, self.spec.root, COMPONENT, tolerance=r.tolerance_ms / 1000
        )
        overlaps, violations = self._new_findings(judged)
        for o in overlaps:
            (r.overlaps if o.kind == leaders.TWO_LEADERS else r.frozen).append(o.describe())
        r.violations += violations
        r.lost = await self.lost_objects()
        r.files += [
            v.text for v in oracle.check_manifests(self.node_roots(), MANIFEST, self.expected)
        ]

    async def run(self, kinds: Sequence[str]) -> list[Round]:
        rounds: list[Round] = list(self.done)
        for n, kind in enumerate(kinds, 1):
            if n <= len(self.done):
                continue
            common.log(f"round {n}/{len(kinds)}: {kind}")
            r = Round(n=n, kind=kind)
            try:
                await self.one_round(r)
            except Exception as exc:
                r.status, r.error = "not recovered", f"{type(exc).__name__}: {exc}"
                common.log(f"  failed: {r.error}")
                await self.stop_probe()
                self.samples.clear()
                with contextlib.suppress(Exception):
                    await self.wait_settled(RECOVER_S)
                with contextlib.suppress(Exception):
                    await self.judge(r)
            rounds.append(r)
            common.log(
                f"  {r.status}: {r.detail}; leader {common.fmt(r.leader_s())}s, reconcile "
                f"{common.fmt(r.reconcile_s())}s, settled {common.fmt(r.settled_s())}s; "
                f"overlaps {len(r.overlaps)}, frozen {len(r.frozen)}, violations "
                f"{len(r.violations)}, lost {len(r.lost)}, files {len(r.files)}"
            )
            for text in (*r.overlaps, *r.violations, *r.lost, *r.files):
                common.log(f"    {text}")
            if self.partial is not None:  # what a run cut short still leaves
                self.partial.write_text(json.dumps([round_json(x) for x in rounds], indent=1))
        return rounds

    async def close(self) -> None:
        await self.stop_probe()
        await self.recorder.stop()
        with contextlib.suppress(Exception):
            await self.client.close()


async def _async_true(value: bool) -> bool:
    return value


async def _transient_retried(call: Callable[[], Awaitable[Any]], tries: int = 6) -> Any:
    """`call()`, again after a transport error (a read timeout of a loaded API server),
    up to `tries` times; an API error (an answer) is not retried."""
    for attempt in range(tries):
        try:
            return await call()
        except httpx2.TransportError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(2.0)
    raise AssertionError("unreachable")


# --- measuring the stamps ----------------------------------------------------------------------
_KLOG_STAMP = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d:\d\d:\d\d\.\d{6})")


def line_stamp_lateness(
    root: Path, outages: Sequence[tuple[str, datetime, datetime]] = ()
) -> dict[str, float | int]:
    """containerd's stamp of each controller manager log line against klog's own (the
    process's clock when it wrote the line; one kernel clock): how late a line is
    stamped, in milliseconds. Lines stamped on a node while its containerd was down or
    catching up (`outages`) are counted apart: they wait in the pipe."""
    late: list[float] = []
    during = 0
    for instance in instances.find_instances(root, COMPONENT):
        with open(instance.log, encoding="utf-8", errors="replace") as fh:
            for line in leaderlogs.read_cri_log(fh):
                m = _KLOG_STAMP.match(line.text)
                if m is None:
                    continue
                if any(n == instance.node and a <= line.time <= b for n, a, b in outages):
                    during += 1
                    continue
                written = datetime.strptime(
                    f"{line.time.year}-{m[1]}-{m[2]} {m[3]}", "%Y-%m-%d %H:%M:%S.%f"
                ).replace(tzinfo=UTC)
                late.append((line.time - written).total_seconds() * 1000)
    if not late:
        return {"lines": 0, "during_containerd_outages": during}
    late.sort()
    return {
        "lines": len(late),
        "median_ms": round(statistics.median(late), 3),
        "p99_ms": round(late[max(0, math.ceil(0.99 * len(late)) - 1)], 3),
        "max_ms": round(late[-1], 3),
        "during_containerd_outages": during,
    }


def longest_wait(samples: Sequence[Any], *, until: float) -> float | None:
    """The reconcile outage of a round: the longest a probe sent in it waited for its
    ReplicaSet (one never answered waits until `until`, when the probe stopped). Unlike
    `leader`, it counts only time with nobody reconciling: a rollout's old leader leads
    on until its pod goes."""
    waits = [(s.reconciled if s.reconciled is not None else until) - s.sent for s in samples]
    return round(max(waits), 3) if waits else None


# --- the summary -------------------------------------------------------------------------------
def summarize(rounds: Sequence[Round], kinds: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        rs = [r for r in rounds if r.kind == kind]
        if not rs:
            continue
        entry: dict[str, Any] = {
            "rounds": len(rs),
            "recovered": sum(1 for r in rs if r.status == "recovered"),
            "two_leaders": sum(len(r.overlaps) for r in rs),
            "frozen_leader": sum(len(r.frozen) for r in rs),
            "guard_violations": sum(len(r.violations) for r in rs),
            "objects_lost": sum(len(r.lost) for r in rs),
            "files_not_restored": sum(len(r.files) for r in rs),
        }
        for label, get in (
            ("leader_s", Round.leader_s),
            ("reconcile_s", Round.reconcile_s),
            ("outage_s", lambda r: r.outage_s),
            ("settled_s", Round.settled_s),
        ):
            values = [v for r in rs if (v := get(r)) is not None]
            entry[label] = (
                {
                    "median": round(statistics.median(values), 2),
                    "p95": round(p95(values), 2),
                    "max": round(max(values), 2),
                }
                if values
                else None
            )
        out[kind] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    head = [
        "fault kind",
        "rounds",
        "recovered",
        "leader med/p95/max s",
        "reconcile med/p95/max s",
        "outage med/p95/max s",
        "two leaders",
        "frozen",
        "guard viol.",
        "lost",
        "files",
    ]
    rows = [head]

    def triple(v: dict[str, float] | None) -> str:
        return "-" if v is None else f"{v['median']:.1f} / {v['p95']:.1f} / {v['max']:.1f}"

    for kind, e in summary.items():
        rows.append(
            [
                kind,
                str(e["rounds"]),
                str(e["recovered"]),
                triple(e["leader_s"]),
                triple(e["reconcile_s"]),
                triple(e.get("outage_s")),
                str(e["two_leaders"]),
                str(e["frozen_leader"]),
                str(e["guard_violations"]),
                str(e["objects_lost"]),
                str(e["files_not_restored"]),
            ]
        )
    return common.render_table(rows)


async def bench(
    args: argparse.Namespace, lab: Lab, kinds: Sequence[str], done: Sequence[Round] = ()
) -> dict[str, Any]:
    """The run: `kinds` in order, after `done` (the rounds of a run resumed)."""
    chaos = Chaos(lab, args, done)
    started = time.monotonic()
    try:
        await chaos.prepare()
        common.log(f"settled; {len(kinds)} round(s), seed {args.seed}")
        if done:
            common.log(f"resumed after round {len(done)}")
        rounds = await chaos.run(kinds)
    finally:
        await chaos.close()
    return await asyncio.to_thread(
        judged_result,
        lab.root,
        rounds,
        outages=chaos.outages,
        max_late_ms=chaos.max_late_ms,
        head={
            "seed": args.seed,
            "kinds": list(dict.fromkeys(kinds)),
            "setup": chaos.setup,
            "wall_s": round(time.monotonic() - started, 1),
            **({"resumed_after_round": len(done)} if done else {}),
        },
    )


def judged_result(
    root: Path,
    rounds: Sequence[Round],
    *,
    outages: Sequence[tuple[str, datetime, datetime]],
    max_late_ms: float,
    head: dict[str, Any],
) -> dict[str, Any]:
    """The run's raw numbers: its rounds, and the whole run judged once more by the
    strict oracle from the lab's archived logs at `root`, at the larger of the nominal
    tolerance and the measurement error seen in the run."""
    stamps = line_stamp_lateness(root, outages)
    exits = [r.exit_stamp_late_ms for r in rounds if r.exit_stamp_late_ms is not None]
    # `max_late_ms` already holds every killed leader's exit stamp (measured_error_ms).
    tolerance_ms = max(float(leaders.TOLERANCE_MS), max_late_ms, float(stamps.get("max_ms", 0)))
    final = oracle.judge(root, COMPONENT, tolerance=tolerance_ms / 1000)
    kinds = head.get("kinds") or list(dict.fromkeys(r.kind for r in rounds))
    return {
        **common.run_info(),
        **head,
        "kinds": kinds,
        "tolerance_ms": round(tolerance_ms, 1),
        "nominal_tolerance_ms": leaders.TOLERANCE_MS,
        "line_stamp_lateness": stamps,
        "exit_stamp_lateness_ms": {"n": len(exits), "max": max(exits)} if exits else {"n": 0},
        "summary": summarize(rounds, kinds),
        "final_oracle": {
            "intervals": len(final.leaders.intervals),
            "two_leaders": [o.describe() for o in final.leaders.overlaps],
            "frozen_leader": [o.describe() for o in final.leaders.frozen],
            "guard_actions": len(final.actions),
            "violations": [v.text for v in final.violations],
            "warnings": [*final.leaders.warnings, *final.warnings],
        },
        "rounds": [round_json(r) for r in rounds],
    }


def containerd_outages(rounds: Sequence[Round]) -> list[tuple[str, datetime, datetime]]:
    """The containerd outages of recorded rounds, as the run counted them: from the
    daemon's restart, CONTAINERD_OUTAGE_S long (a run's own list is kept in memory)."""
    out = []
    for r in rounds:
        if r.kind == "containerd-kill" and r.t0_wall and r.t_heal is not None:
            start = datetime.fromisoformat(r.t0_wall) + timedelta(seconds=r.t_heal - r.t0)
            out.append((r.node, start, start + timedelta(seconds=CONTAINERD_OUTAGE_S)))
    return out


def resumable(partial: Path, kinds: Sequence[str]) -> list[Round]:
    """The rounds of a run cut short, checked to be the start of `kinds` (the same
    seeded schedule) with rounds left to run."""
    done = rounds_from([partial])
    if [r.kind for r in done] != list(kinds[: len(done)]):
        raise ValueError(
            f"{partial}: its {len(done)} rounds are not the start of this schedule "
            "(give the run's own --seed, --rounds and --kinds)"
        )
    if len(done) >= len(kinds):
        raise ValueError(f"{partial}: all {len(kinds)} rounds were run already")
    return done


def judge_cut_short(partial: Path, root: Path) -> dict[str, Any]:
    """`--judge`: a run stopped before its last round (killed at a deadline) left its
    rounds in `<json>.partial` and, with `--keep-lab`, its lab: judge the whole run
    once more, as the run would have at its end."""
    rounds = rounds_from([partial])
    if not rounds:
        raise SystemExit(f"error: {partial}: no rounds recorded")
    return judged_result(
        root,
        rounds,
        outages=containerd_outages(rounds),
        max_late_ms=max((r.tolerance_ms or 0.0 for r in rounds), default=0.0),
        head={"cut_short": True, "partial": str(partial), "rounds_recorded": len(rounds)},
    )


def round_json(r: Round) -> dict[str, Any]:
    return {
        **asdict(r),
        "leader_s": r.leader_s(),
        "reconcile_s": r.reconcile_s(),
        "settled_s": r.settled_s(),
        "clock": "t_* are this process's monotonic seconds",
    }


def failures(result: dict[str, Any]) -> list[str]:
    """Every round that did not recover, lost an object, left a manifest changed, or
    where the oracle found two leaders or a guard violation."""
    out = []
    final = result.get("final_oracle") or {}
    for text in [*final.get("two_leaders", []), *final.get("violations", [])]:
        out.append(f"whole run: {text}")
    for r in result["rounds"]:
        what = []
        if r["status"] != "recovered":
            what.append(f"{r['status']} ({r['error']})")
        for key in ("overlaps", "violations", "lost", "files"):
            if r[key]:
                what.append(f"{key}: {r[key]}")
        if what:
            out.append(f"#{r['n']} {r['kind']}: " + "; ".join(what))
    return out


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown kind(s) {', '.join(unknown)} (known: {', '.join(KINDS)})"
        )
    return kinds


def rounds_from(paths: Sequence[Path]) -> list[Round]:
    """The rounds of earlier runs: their `--json` files (or what a run cut short left,
    `<json>.partial`)."""
    names = {f.name for f in fields(Round)}
    out: list[Round] = []
    for path in paths:
        doc = json.loads(path.read_text())
        for r in doc["rounds"] if isinstance(doc, dict) else doc:
            out.append(Round(**{k: v for k, v in r.items() if k in names}))
    return out


def report(paths: Sequence[Path]) -> int:
    """`--report`: the table of the rounds of earlier runs, together."""
    rounds = rounds_from(paths)
    kinds = [k for k in KINDS if any(r.kind == k for r in rounds)]
    print(f"{len(rounds)} rounds from {', '.join(str(p) for p in paths)}")
    print()
    print(table(summarize(rounds, kinds)))
    bad = failures({"rounds": [round_json(r) for r in rounds]})
    if bad:
        print("\nfailed rounds:\n  " + "\n  ".join(bad))
    return 1 if bad else 0


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=len(KINDS), help="rounds (default: one block)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", type=parse_kinds, default=list(KINDS), help="comma-separated")
    ap.add_argument("--root", type=Path, default=Path("/tmp/kh-chaos"))
    ap.add_argument("--host-port", type=int, default=16701)
    ap.add_argument("--json", type=Path, help="write the raw numbers here (default: stdout)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab up (for debugging)")
    ap.add_argument("--reuse-lab", action="store_true", help="use the lab already up at --root")
    ap.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only print the table of earlier runs' --json files (or <json>.partial)",
    )
    ap.add_argument(
        "--resume",
        type=Path,
        metavar="PARTIAL",
        help="continue a run cut short after its last round: the rounds in PARTIAL, its "
        "kept lab at --root (started again if down), the same --seed, --rounds and --kinds",
    )
    ap.add_argument(
        "--judge",
        type=Path,
        metavar="PARTIAL",
        help="judge a run cut short: its <json>.partial and its kept lab at --root",
    )
    args = ap.parse_args()
    if args.report:
        return report(args.report)
    if args.judge:
        try:
            result = judge_cut_short(args.judge, args.root.resolve())
        except (OSError, ValueError, instances.LeadersError) as e:
            ap.error(f"--judge: {e}")
        return show(result, args.json)
    if os.geteuid() != 0:
        ap.error("the lab needs root")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    kinds = schedule(args.kinds, args.rounds, args.seed)
    lab = Lab(root=args.root.resolve(), port=args.host_port)
    done: list[Round] = []
    if args.resume:
        try:
            done = resumable(args.resume, kinds)
        except (OSError, ValueError) as e:
            ap.error(f"--resume: {e}")
        common.log(f"lab up at {lab.root} (started again if it is down)")
        common.run(common.kubehoist_cmd("lab", "up", "--root", str(lab.root)))
    reuse = args.reuse_lab or bool(done)
    with common.lab_up(lab, keep=args.keep_lab, reuse=reuse, control_planes=3):
        result = asyncio.run(bench(args, lab, kinds, done))
    return show(result, args.json)


def show(result: dict[str, Any], path: Path | None) -> int:
    """Print a run's figures and write its raw numbers; 1 if anything failed."""
    common.print_run_info(result)
    wall = f", wall {result['wall_s']:.0f}s" if "wall_s" in result else " (cut short)"
    print(
        f"seed {result.get('seed', '?')}, {len(result['rounds'])} rounds, tolerance "
        f"{result['tolerance_ms']} ms{wall}"
    )
    print()
    print(table(result["summary"]))
    print(f"\nlog line stamping (containerd vs klog): {result['line_stamp_lateness']}")
    print(f"SIGKILL -> runtime's finishedAt: {result['exit_stamp_lateness_ms']}")
    f = result["final_oracle"]
    print(
        f"whole run, strict oracle: {f['intervals']} lead intervals, "
        f"{len(f['two_leaders'])} two-leaders overlaps, {len(f['frozen_leader'])} frozen-leader "
        f"overlaps, {f['guard_actions']} guard actions, {len(f['violations'])} violations"
    )
    return common.finish(result, failures(result), path)


if __name__ == "__main__":
    sys.exit(main())
