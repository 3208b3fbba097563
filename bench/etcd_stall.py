"""Whose view stalls when one stacked etcd member restarts: the controllers', or only
the watches served by that member's API server?

    ip netns exec <lab LAN netns> python3 bench/etcd_stall.py ROOT VICTIM OUT.json

(as root, on a lab up at ROOT with 3 control planes; VICTIM: the control plane whose
etcd member is restarted). Results: docs/bench.md, the chaos section.

Per API server, a watch of this run's ReplicaSets (one client pinned to each API
server). A creator pinned to an API server whose etcd stays up makes a Deployment of
0 replicas every 0.5 s. One etcd member is restarted (lab.faults.etcd_restart). For
each probe: sent -> its ReplicaSet first seen through each API server, and the
ReplicaSet's creationTimestamp (the controllers' create, the host's one clock).
"""

import asyncio
import contextlib
import copy
import json
import sys
import time
import uuid
from pathlib import Path

import yaml
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Namespace

from kubehoist.kube.probe import PROBE_LABEL, probe_deployment
from kubehoist.lab import faults
from kubehoist.lab.spec import LabSpec

ROOT = Path(sys.argv[1])
VICTIM = sys.argv[2]
OUT = Path(sys.argv[3])
NS = "etcd-exp"
spec = LabSpec.load(ROOT)
admin = yaml.safe_load((ROOT / "admin.conf").read_text())


def client_for(ip: str) -> AsyncClient:
    cfg = copy.deepcopy(admin)
    for c in cfg["clusters"]:
        c["cluster"]["server"] = f"https://{ip}:6443"
    return AsyncClient(KubeConfig.from_dict(cfg), trust_env=False)


async def main() -> None:
    run = uuid.uuid4().hex[:8]
    cps = {n.name: n for n in spec.control_planes}
    others = [n for n in cps if n != VICTIM]
    creator = client_for(cps[others[0]].ip)
    with contextlib.suppress(Exception):
        await creator.create(Namespace(metadata=ObjectMeta(name=NS)))
    seen: dict[str, dict[str, float]] = {n: {} for n in cps}
    created_ts: dict[str, str] = {}
    sent: dict[str, float] = {}
    time.time()

    async def watch(name: str) -> None:
        c = client_for(cps[name].ip)
        while True:
            try:
                lst = c.list(ReplicaSet, namespace=NS, labels={PROBE_LABEL: run})
                async for rs in lst:
                    rec(name, rs)
                async for _e, rs in c.watch(
                    ReplicaSet,
                    namespace=NS,
                    labels={PROBE_LABEL: run},
                    resource_version=lst.resourceVersion,
                ):
                    rec(name, rs)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)

    def rec(name: str, rs: ReplicaSet) -> None:
        for ref in rs.metadata.ownerReferences or []:
            if ref.kind == "Deployment":
                seen[name].setdefault(ref.name, time.time())
                created_ts.setdefault(ref.name, str(rs.metadata.creationTimestamp))

    tasks = [asyncio.create_task(watch(n)) for n in cps]
    await asyncio.sleep(2)
    stop = asyncio.Event()

    async def create() -> None:
        seq = 0
        while not stop.is_set():
            name = f"e-{run}-{seq:04d}"
            sent[name] = time.time()
            try:
                await creator.create(probe_deployment(name, NS, run))
            except Exception as exc:
                print("create failed", name, exc, flush=True)
            seq += 1
            await asyncio.sleep(0.5)

    ct = asyncio.create_task(create())
    await asyncio.sleep(5)
    t_fault = time.time()
    await asyncio.to_thread(faults.etcd_restart, spec, cps[VICTIM])
    t_back = time.time()
    await asyncio.sleep(15)
    stop.set()
    await ct
    await asyncio.sleep(3)
    for t in tasks:
        t.cancel()
    rows = []
    for name, s in sorted(sent.items()):
        rows.append(
            {
                "name": name,
                "sent": s - t_fault,
                **{f"via_{n}": (seen[n][name] - s) if name in seen[n] else None for n in cps},
                "rs_created": created_ts.get(name),
            }
        )
    OUT.write_text(
        json.dumps(
            {"victim": VICTIM, "fault_at": t_fault, "back_after": t_back - t_fault, "rows": rows},
            indent=1,
        )
    )
    worst = {n: max((r[f"via_{n}"] or 999) for r in rows) for n in cps}
    print(
        "victim",
        VICTIM,
        "etcd back after",
        round(t_back - t_fault, 1),
        "s; worst sent->seen per API server:",
        {k: round(v, 1) for k, v in worst.items()},
        flush=True,
    )
    for r in rows:
        if -1 < r["sent"] < 30:
            print(
                round(r["sent"], 1),
                {n: (round(r[f"via_{n}"], 1) if r[f"via_{n}"] is not None else None) for n in cps},
                r["rs_created"],
            )
    async for d in creator.list(Deployment, namespace=NS):
        await creator.delete(Deployment, d.metadata.name, namespace=NS)


asyncio.run(main())
