"""Benchmark: `kubehoist status` does not grow with the cluster.

Against a running lab (or any cluster you may litter): time `kubehoist status` and
count its API requests, then create N unrelated pods in the same namespace (bound to
a node that does not exist, so nothing runs them), and measure again. Prints medians;
removes the pods at the end.

    python bench/status_scale.py --kubeconfig /tmp/khlab-status/admin.conf --pods 2000

Two timings: the CLI as a user runs it (a new Python process each time, so it
includes interpreter start-up and imports), and `collect()` alone in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from lightkube import AsyncClient
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kubehoist import kube
from kubehoist.components import COMPONENTS
from kubehoist.status import collect

FILLER_LABEL = "kubehoist.dev/bench"
FILLER_VALUE = "status-scale"
NO_SCHEDULER = "kubehoist-bench-nobody"
"""No scheduler has this name, so the pods stay Pending and nothing runs them. (A
nodeName of a node that does not exist would not do: KCM's pod GC deletes those.)"""
KUBEHOIST = (sys.executable, "-m", "kubehoist")


def cli_runs(kubeconfig: str, namespace: str, runs: int) -> tuple[list[float], set[int]]:
    times, counts = [], set()
    for _ in range(runs):
        start = time.monotonic()
        proc = subprocess.run(
            [*KUBEHOIST, "status", "-v", "--kubeconfig", kubeconfig, "-n", namespace],
            capture_output=True,
            text=True,
            check=False,
        )
        times.append(time.monotonic() - start)
        if proc.returncode not in (0, 3):
            raise SystemExit(f"kubehoist status failed: {proc.stderr}")
        match = re.search(r"api requests: (\d+)", proc.stderr)
        counts.add(int(match.group(1)) if match else -1)
    return times, counts


async def collect_runs(kubeconfig: str, namespace: str, runs: int) -> tuple[list[float], int]:
    times: list[float] = []
    where = kube.target(kubeconfig=kubeconfig)
    async with kube.open_api(where) as api:
        for _ in range(runs):
            start = time.monotonic()
            await collect(api, components=list(COMPONENTS.values()), namespace=namespace)
            times.append(time.monotonic() - start)
    return times, where.log.count // runs


async def fill(kubeconfig: str, namespace: str, count: int, *, concurrency: int = 16) -> None:
    where = kube.target(kubeconfig=kubeconfig)
    client: AsyncClient = kube.connect_async(where, namespace=namespace)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        pod = Pod(
            metadata=ObjectMeta(
                name=f"bench-filler-{i:05d}",
                namespace=namespace,
                labels={FILLER_LABEL: FILLER_VALUE, "app": f"filler-{i % 50}"},
            ),
            spec=PodSpec(
                schedulerName=NO_SCHEDULER,
                containers=[Container(name="c", image="registry.k8s.io/pause:3.10")],
            ),
        )
        async with sem:
            call = kube.Call(verb="create", resource="pods", namespace=namespace)
            with kube.api_errors(call, server=where.server):
                try:
                    await client.create(pod)
                except Exception as exc:  # already there from an interrupted run
                    if "AlreadyExists" not in str(exc) and "already exists" not in str(exc):
                        raise

    await asyncio.gather(*(one(i) for i in range(count)))
    await client.close()


async def empty(kubeconfig: str, namespace: str, *, concurrency: int = 16) -> None:
    where = kube.target(kubeconfig=kubeconfig)
    client: AsyncClient = kube.connect_async(where, namespace=namespace)
    sem = asyncio.Semaphore(concurrency)
    names = [
        str(p.metadata.name)
        async for p in client.list(
            Pod, namespace=namespace, labels={FILLER_LABEL: FILLER_VALUE}, chunk_size=500
        )
        if p.metadata is not None
    ]

    async def one(name: str) -> None:
        async with sem:
            try:
                await client.delete(Pod, name, namespace=namespace, grace_period=0)
            except Exception as exc:
                if "not found" not in str(exc):
                    raise

    await asyncio.gather(*(one(n) for n in names))
    await client.close()


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def measure(kubeconfig: str, namespace: str, runs: int) -> dict[str, Any]:
    cli_times, cli_counts = cli_runs(kubeconfig, namespace, runs)
    col_times, col_count = asyncio.run(collect_runs(kubeconfig, namespace, runs))
    return {
        "cli": cli_times,
        "cli_requests": cli_counts,
        "collect": col_times,
        "collect_requests": col_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("-n", "--namespace", default="kube-system")
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="leave the filler pods")
    parser.add_argument("--clean", action="store_true", help="only remove filler pods")
    args = parser.parse_args()
    if args.clean:
        asyncio.run(empty(args.kubeconfig, args.namespace))
        return

    before = measure(args.kubeconfig, args.namespace, args.runs)
    start = time.monotonic()
    asyncio.run(fill(args.kubeconfig, args.namespace, args.pods))
    print(f"created {args.pods} filler pods in {time.monotonic() - start:.1f}s", flush=True)
    try:
        after = measure(args.kubeconfig, args.namespace, args.runs)
    finally:
        if not args.keep:
            asyncio.run(empty(args.kubeconfig, args.namespace))
            print("filler pods removed", flush=True)
    print(f"kubehoist status, median of {args.runs} runs, namespace {args.namespace}:")
    for label, m in (("without filler", before), (f"with {args.pods} pods", after)):
        print(
            f"  {label:>16}: CLI {median_ms(m['cli'])} (requests {sorted(m['cli_requests'])}), "
            f"collect() {median_ms(m['collect'])} (requests {m['collect_requests']})"
        )


if __name__ == "__main__":
    main()
