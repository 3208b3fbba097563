#!/usr/bin/env python3
"""The scale benchmark: what the guards and `kubehoist status` cost the API server as
kube-system grows to the size of a 5,000-node cluster's.

    sudo python3 bench/scale.py [--pods 0,1500,15000] [--guards 3] [--window 30] \
        [--baseline-src PATH] [--root /tmp/kh-scale] [--host-port 16701] [--json PATH]

One lab (`lab up --workers 0`: one control plane with its real kubelet). kube-system is
filled with pods bound to fake Node objects (three pods a node, labelled and tolerating
as DaemonSet pods do; no kubelet runs them, and they tolerate the taints the node
lifecycle controller puts on nodes that never report). For every pod count, in turn:

idle       no guard: the API server's own request rate and CPU (the baseline);
guards     `--guards` guards (`kubehoist guard run`, host processes with the lab's admin
           kubeconfig and empty manifests directories, one --node each, as in
           bench/failover.py) of this tree;
baseline   the same with the guard of `--baseline-src` (another checkout's `src`), when
           given: the same measurement of an older guard, in the same run.

Each variant: guards started, one of them holding the guards' Lease and every guard's
reads going (20 s of warm-up), then `--window` seconds measured from the API server's
own /metrics (apiserver_request_total, apiserver_response_sizes_sum by verb and
resource, process_cpu_seconds_total), and the guards' own metrics where they have them
(kubehoist_guard_api_requests_total, kubehoist_guard_round_seconds). What the guards
cost is the variant's rate minus the idle window's. Then `kubehoist status` is run
five times (a new process each, as a user runs it): median wall time and its requests.

This is a benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Container, NodeSpec, PodSpec, Toleration
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench import common
from bench.common import COMPONENT, NAMESPACE

FILL_LABEL = "kubehoist.dev/bench"
FILL_VALUE = "scale"
PODS_PER_NODE = 3
WARMUP_S = 20.0
STATUS_RUNS = 5
SETTLE_QUIET_S = 10.0
ROUND_SAMPLES = ("kubehoist_guard_round_seconds_sum", "kubehoist_guard_round_seconds_count")
REPO_SRC = Path(__file__).resolve().parents[1] / "src"


# --- filling kube-system ---------------------------------------------------------------------
def _node(i: int) -> Node:
    return Node(
        metadata=ObjectMeta(name=f"scale-node-{i}", labels={FILL_LABEL: FILL_VALUE}),
        spec=NodeSpec(),
    )


def _pod(i: int) -> Pod:
    ds = i % PODS_PER_NODE
    return Pod(
        metadata=ObjectMeta(
            name=f"scale-fill-{i}",
            namespace=NAMESPACE,
            labels={FILL_LABEL: FILL_VALUE, "k8s-app": f"scale-ds-{ds}"},
        ),
        spec=PodSpec(
            nodeName=f"scale-node-{i // PODS_PER_NODE}",
            containers=[Container(name="c", image="registry.invalid/scale:never")],
            # as a DaemonSet's pods: they stay on nodes that never report
            tolerations=[
                Toleration(key=k, operator="Exists", effect=e)
                for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
                for e in ("NoExecute", "NoSchedule")
            ],
        ),
    )


def _create(client: Client, obj: Any) -> None:
    """Create `obj`; an existing one is fine (a retried create that had succeeded), and
    an overloaded API server (429/5xx, a timeout) is tried again, up to 10 times."""
    for attempt in range(10):
        try:
            client.create(obj)
            return
        except ApiError as exc:
            if exc.status.code == 409:
                return
            if exc.status.code not in (429, 500, 503, 504) or attempt == 9:
                raise
        except httpx.TransportError:
            if attempt == 9:
                raise
        time.sleep(0.5 * (attempt + 1))


def fill(kubeconfig: Path, have: int, want: int) -> float:
    """Create pods `have`..`want`-1 (and their nodes); return the seconds it took."""
    start = time.monotonic()
    clients = [
        Client(KubeConfig.from_file(str(kubeconfig)), trust_env=False, timeout=httpx.Timeout(60))
        for _ in range(8)
    ]
    nodes = range(have // PODS_PER_NODE, -(-want // PODS_PER_NODE))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _create(clients[i % 8], _node(i)), nodes))
        list(pool.map(lambda i: _create(clients[i % 8], _pod(i)), range(have, want)))
    return time.monotonic() - start


# --- the API server's metrics ----------------------------------------------------------------
def scrape(client: Client) -> dict[str, float]:
    """Sums of the API server's counters this benchmark reads, keyed by a short name."""
    resp = client._client._client.get("/metrics")  # the admin kubeconfig may read it
    resp.raise_for_status()
    out: dict[str, float] = {}

    def add(key: str, v: float) -> None:
        out[key] = out.get(key, 0.0) + v

    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            if s.name == "apiserver_request_total":
                verb, res = s.labels.get("verb", ""), s.labels.get("resource", "")
                add("requests", s.value)
                add(f"requests:{verb}:{res}", s.value)
            elif s.name == "apiserver_response_sizes_sum":
                verb, res = s.labels.get("verb", ""), s.labels.get("resource", "")
                add("bytes", s.value)
                add(f"bytes:{verb}:{res}", s.value)
            elif s.name == "process_cpu_seconds_total":
                add("cpu", s.value)
            elif (
                s.name == "apiserver_longrunning_requests"
                and s.labels.get("verb") == "WATCH"
                and s.labels.get("resource") == "pods"
            ):
                add("open_pod_watches", s.value)
    return out


def rates(a: dict[str, float], b: dict[str, float], secs: float) -> dict[str, float]:
    keys = set(a) | set(b)
    return {k: (b.get(k, 0.0) - a.get(k, 0.0)) / secs for k in keys if k != "open_pod_watches"}


def guard_metrics(port: int) -> dict[str, float]:
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "kubehoist_guard_api_requests_total":
                out[f"req:{s.labels['verb']}"] = s.value
            elif s.name in (
                "kubehoist_guard_round_seconds_sum",
                "kubehoist_guard_round_seconds_count",
            ):
                out[s.name.rsplit("_", 1)[1]] = s.value
    return out


# --- the guards -------------------------------------------------------------------------------
@dataclass
class Guards:
    kubeconfig: Path
    src: Path
    n: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.n):
            d = Path(tempfile.mkdtemp(prefix="kh-scale-guard-"))
            port = _free_port()
            env = dict(os.environ, PYTHONPATH=str(self.src))
            cmd = [
                sys.executable, "-m", "kubehoist", "guard", "run",
                "--component", COMPONENT, "--kubeconfig", str(self.kubeconfig),
                "--manifests-dir", str(d), "--node", f"scale-guard-{i}",
                "--metrics-port", str(port),
            ]  # fmt: skip
            log_fh = open(d / "guard.log", "wb")  # noqa: SIM115 - kept open for the process
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log_fh, stderr=log_fh))
            self.ports.append(port)
            self.dirs.append(d)

    def wait_leading(self, client: Client, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        name = f"kubehoist-guard-{COMPONENT}"
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a guard exited {p.returncode}: see {self.dirs}")
            try:
                lease = client.get(Lease, name, namespace=NAMESPACE)
                holder = (lease.spec.holderIdentity if lease.spec else "") or ""
                if holder.startswith("scale-guard-"):
                    return
            except ApiError:
                pass
            time.sleep(0.5)
        raise RuntimeError("no bench guard took the guards' Lease")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- one measurement --------------------------------------------------------------------------
def measure_window(client: Client, window: float, ports: list[int]) -> dict[str, Any]:
    g0 = [guard_metrics(p) for p in ports]
    a = scrape(client)
    t0 = time.monotonic()
    time.sleep(window)
    b = scrape(client)
    secs = time.monotonic() - t0
    g1 = [guard_metrics(p) for p in ports]
    out: dict[str, Any] = {
        "seconds": secs,
        "api": rates(a, b, secs),
        "open_pod_watches": b.get("open_pod_watches"),
    }
    own: dict[str, float] = {}
    rounds = time_sum = 0.0
    for x, y in zip(g0, g1, strict=True):
        for k in y:
            if k.startswith("req:"):
                own[k[4:]] = own.get(k[4:], 0.0) + (y[k] - x.get(k, 0.0)) / secs
        rounds += y.get("count", 0.0) - x.get("count", 0.0)
        time_sum += y.get("sum", 0.0) - x.get("sum", 0.0)
    out["guard_requests_per_s"] = own or None
    out["guard_round_ms"] = (1000 * time_sum / rounds) if rounds else None
    out["guard_rounds_per_s"] = rounds / secs if rounds else None
    return out


def status_runs(kubeconfig: Path) -> dict[str, Any]:
    times, reqs = [], set()
    for _ in range(STATUS_RUNS):
        t = time.monotonic()
        proc = subprocess.run(
            [*common.kubehoist_cmd("status", "-v", "--kubeconfig", str(kubeconfig))],
            capture_output=True, text=True, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO_SRC)),
        )  # fmt: skip
        times.append(time.monotonic() - t)
        m = re.search(r"api requests: (\d+)", proc.stderr)
        reqs.add(int(m.group(1)) if m else -1)
    return {"median_s": statistics.median(times), "requests": sorted(reqs)}


def wait_quiet(client: Client, timeout: float = 600) -> float:
    """Wait until the API server sees few pod writes (the node lifecycle controller marks
    the fake nodes' pods NotReady once, ~40 s after their nodes appear)."""
    start = time.monotonic()
    quiet_since = None
    last = scrape(client)
    while time.monotonic() - start < timeout:
        time.sleep(2)
        now = scrape(client)
        writes = sum(
            now.get(f"requests:{v}:pods", 0) - last.get(f"requests:{v}:pods", 0)
            for v in ("PATCH", "PUT", "POST", "DELETE")
        )
        last = now
        if writes / 2 < 5:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                break
        else:
            quiet_since = None
    return time.monotonic() - start


def summary_row(pods: int, variant: str, m: dict[str, Any], idle: dict[str, Any]) -> list[str]:
    api, base = m["api"], idle["api"]

    def extra(key: str) -> float:
        return float(api.get(key, 0.0)) - float(base.get(key, 0.0))

    pod_lists = extra("requests:LIST:pods")
    own = m.get("guard_requests_per_s") or {}
    return [
        str(pods),
        variant,
        f"{extra('requests'):.2f}",
        f"{pod_lists:.2f}",
        f"{extra('bytes') / 1024:.1f}",
        f"{extra('cpu') * 100:.1f}",
        " ".join(f"{k}={v:.2f}" for k, v in sorted(own.items())) or "–",
        common.fmt(m.get("guard_round_ms")),
        common.fmt(m["status"]["median_s"]),
        ",".join(str(r) for r in m["status"]["requests"]),
    ]


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--pods", default="0,1500,15000")
    p.add_argument("--guards", type=int, default=3)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--src", type=Path, default=REPO_SRC, help="the guard to measure")
    p.add_argument("--baseline-src", type=Path)
    p.add_argument("--root", type=Path, default=Path("/tmp/kh-scale"))
    p.add_argument("--host-port", type=int, default=16701)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    lab = common.Lab(args.root, args.host_port)
    counts = sorted(int(x) for x in args.pods.split(","))
    variants = [("guards", args.src.resolve())]
    if args.baseline_src:
        variants.append(("baseline", args.baseline_src.resolve()))
    result: dict[str, Any] = {**common.run_info(), "steps": []}
    failed: list[str] = []
    with common.lab_up(lab, keep=args.keep, workers=0):
        client = Client(KubeConfig.from_file(str(lab.kubeconfig)), trust_env=False)
        have = 0
        for pods in counts:
            try:
                took = fill(lab.kubeconfig, have, pods)
            except Exception as exc:
                failed.append(f"filling kube-system to {pods} pods: {exc!r}")
                break
            have = max(have, pods)
            common.log(f"{pods} pods in kube-system (+{took:.0f}s); settling")
            try:
                settle = wait_quiet(client)
                step: dict[str, Any] = {"pods": pods, "fill_s": took, "settle_s": settle}
                common.log(f"idle window ({args.window:.0f}s)")
                step["idle"] = measure_window(client, args.window, [])
                step["idle"]["status"] = status_runs(lab.kubeconfig)
            except Exception as exc:
                failed.append(f"{pods} pods, idle: {exc!r}")
                break
            for name, src in variants:
                guards = Guards(lab.kubeconfig, src, args.guards)
                try:
                    guards.start()
                    guards.wait_leading(client)
                    time.sleep(WARMUP_S)
                    common.log(f"{name}: {args.guards} guards, window ({args.window:.0f}s)")
                    step[name] = measure_window(client, args.window, guards.ports)
                    step[name]["status"] = status_runs(lab.kubeconfig)
                except Exception as exc:
                    failed.append(f"{pods} pods, {name}: {exc}")
                finally:
                    guards.stop()
            result["steps"].append(step)
            if args.json:  # what was measured so far survives a later failure
                args.json.write_text(json.dumps(result, indent=2) + "\n")
        # Not emptied at the end: the lab is purged (or kept as it is, with --keep); a
        # delete of 15,000 pods by selector outlasts the client's read timeout.
    common.print_run_info(result)
    rows = [[
        "pods", "variant", "req/s", "pod LIST/s", "KiB/s", "apiserver CPU %",
        "guards' own requests/s", "round ms", "status s", "status requests",
    ]]  # fmt: skip
    for step in result["steps"]:
        rows.append(summary_row(step["pods"], "idle", step["idle"], step["idle"]))
        for name, _ in variants:
            if name in step:
                rows.append(summary_row(step["pods"], name, step[name], step["idle"]))
    print(
        "\nper second, over the idle window's (the API server's own counters); "
        "guards' own = what the guards counted themselves"
    )
    print(common.render_table(rows))
    return common.finish(result, failed, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
