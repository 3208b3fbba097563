"""`kubehoist demo`: the article's story, told in a fresh lab on real binaries.

1. kubeadm's static kube-controller-manager leads; nothing stands by.
2. render + pivot: a Deployment of standbys, the static pods retired, the lease
   handed over at once instead of after its expiry.
3. status: a Deployment pod leads, the others stand by.
4. scale to 3: how fast standbys are Ready.
5. kill the leader's process: how long the controllers stand still.
6. the article's open problem: scale the Deployment to 0 — the leader removes
   itself and nothing can ever bring a controller manager back (the probe shows it).
7. the answer: `kubehoist guard install` — the guard puts the parked static pod back
   by itself, the controllers recreate the Deployment, and the guard hands back.
8. kill the leader again, with the guard's reaper: failover in seconds.
9. the way back: `guard uninstall`, `rollback`.
Ends with a timeline of measured figures.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod
from rich.console import Console
from rich.table import Table

from kubehoist.errors import KubehoistError
from kubehoist.lab.podproc import kill_container
from kubehoist.lab.spec import LabSpec
from kubehoist.pivot.probes import reconcile_probe

KCM = "kube-controller-manager"
NS = "kube-system"


@dataclass
class Demo:
    root: Path
    host_port: int
    workers: int
    keep: bool
    picture: Path | None = None  # the run's timeline (SVG), its watch record beside it
    console: Console = field(default_factory=lambda: Console(highlight=False))
    figures: list[tuple[str, str]] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    # --- helpers ---------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.print(text)

    def step(self, n: int, title: str) -> None:
        self.console.rule(f"[bold]{n}. {title}")

    def figure(self, what: str, value: str) -> None:
        self.figures.append((what, value))
        self.say(f"[bold green]→ {what}: {value}")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.console.print(f"$ kubehoist {' '.join(args)}", style="dim", markup=False)
        proc = subprocess.run(
            [sys.executable, "-m", "kubehoist", *args], capture_output=True, text=True, check=False
        )
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            self.console.print(out, markup=False, highlight=False)
        if check and proc.returncode not in (0, 3):  # 3: status says "not all Healthy"
            raise KubehoistError(f"kubehoist {args[0]} failed (exit {proc.returncode})")
        return proc

    def holder(self, client: Client) -> str:
        try:
            lease = client.get(Lease, KCM, namespace=NS)
        except ApiError:
            return ""
        return (lease.spec.holderIdentity if lease.spec else None) or ""

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 180) -> float:
        t0 = time.monotonic()
        with self.console.status(f"waiting for {what}"):
            while not check():
                if time.monotonic() - t0 > timeout:
                    raise KubehoistError(f"demo: timed out waiting for {what}")
                time.sleep(0.1)
        return time.monotonic() - t0

    # --- the story -------------------------------------------------------------------
    def run(self) -> None:
        root = str(self.root)
        self.step(0, "a kubeadm cluster in a lab (real etcd, kube-apiserver, KCM, scheduler)")
        self.cli("lab", "down", "--purge", "--root", root, check=False)
        self.cli(
            "lab", "up", "--root", root, "--host-port", str(self.host_port),
            "--workers", str(self.workers),
        )  # fmt: skip
        watch = self._start_watch()
        try:
            self._story()
        finally:
            self._stop_watch(watch)
            if not self.keep:
                self.cli("lab", "down", "--purge", "--root", root, check=False)
            else:
                self.say(f"the lab stays up: kubehoist lab down --purge --root {root}")
        self._timeline()
        self._draw()

    # --- the run's own record and picture -------------------------------------------------
    def _record(self) -> Path | None:
        return None if self.picture is None else self.picture.with_suffix(".jsonl")

    def _start_watch(self) -> subprocess.Popen[bytes] | None:
        """`kubehoist watch --output jsonl` of the controller manager for the whole story."""
        record = self._record()
        if record is None:
            return None
        kc = str(LabSpec.load(self.root.resolve()).admin_kubeconfig)
        record.parent.mkdir(parents=True, exist_ok=True)
        with open(record, "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "kubehoist", "watch", "--output", "jsonl",
                 "--kubeconfig", kc, KCM],
                stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def _stop_watch(self, watch: subprocess.Popen[bytes] | None) -> None:
        if watch is None:
            return
        watch.send_signal(signal.SIGINT)
        try:
            watch.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()

    def _draw(self) -> None:
        record = self._record()
        if self.picture is None or record is None or not record.exists():
            return
        out = self.cli(
            "timeline", str(record), "-o", str(self.picture),
            "--title", "kubehoist demo: pivot, crash, total loss, the guard, the reaper",
            check=False,
        )  # fmt: skip
        if out.returncode == 0:
            self.say(f"the run's timeline: {self.picture} (its watch record: {record})")
        else:
            self.say(f"no timeline drawn: {out.stderr.strip()}")

    def _story(self) -> None:
        spec = LabSpec.load(self.root.resolve())
        kc = str(spec.admin_kubeconfig)
        client = Client(KubeConfig.from_file(kc), trust_env=False)
        cp = spec.api_node
        cp_root = str(cp.root(spec.root))

        self.step(1, "kubeadm's static kube-controller-manager leads; nothing stands by")
        self.wait("the static KCM to lead", lambda: self.holder(client).startswith(f"{cp.name}_"))
        self.cli("status", "--kubeconfig", kc, KCM)

        self.step(2, "pivot: a Deployment of standbys, the static pod retired, a fast hand-over")
        self.say("The article applies a Deployment and deletes the static pod by hand; the")
        self.say("controllers then stand still until the old lease expires (15 s by default).")
        self.cli(
            "render", "-f", f"{cp_root}/etc/kubernetes/manifests/{KCM}.yaml",
            "--host-root", cp_root, "--output-dir", str(spec.root / "rendered"),
        )  # fmt: skip
        t0 = time.monotonic()
        out = self.cli(
            "pivot", "--kubeconfig", kc, "--host-root", cp_root, "--retry-period", "500ms",
        )  # fmt: skip
        self.figure("pivot, end to end", f"{time.monotonic() - t0:.1f}s")
        for line in out.stderr.splitlines():
            if "] handover:" in line and "(" in line and line.rstrip().endswith("s)"):
                self.figure(
                    "hand-over (retired leader stopped → lease released)",
                    line.rsplit("(", 1)[1].rstrip(")"),
                )
            if "] verify:" in line and "after" in line:
                after = line.split("after ", 1)[1].split(")", 1)[0]
                self.figure("release → a Deployment pod leads", after)

        self.step(3, "status: a Deployment pod leads, the others stand by")
        self.cli("status", "--kubeconfig", kc, KCM, "-o", "wide")

        self.step(4, "scale out to 3 standbys")
        t0 = time.monotonic()
        client.patch(Deployment, KCM, {"spec": {"replicas": 3}}, namespace=NS)

        def three_ready() -> bool:
            dep = client.get(Deployment, KCM, namespace=NS)
            return bool(dep.status and (dep.status.readyReplicas or 0) >= 3)

        took = self.wait("3 Ready replicas", three_ready)
        self.figure("scale 2 → 3, until 3 Ready", f"{took:.1f}s")
        self.cli("status", "--kubeconfig", kc, KCM)

        self.step(5, "kill the leader's process (a crash): how long until another leads")
        old = self.holder(client)
        pod = client.get(Pod, old.split("_")[0], namespace=NS)
        kill_container(spec, pod, KCM, signal.SIGKILL)
        self.say(f"killed the container of {old.split('_')[0]}")
        took = self.wait("a new leader", lambda: self.holder(client) not in ("", old), timeout=120)
        self.figure(
            "failover after a crash, without the guard",
            f"{took:.1f}s (the lease must expire first)",
        )
        self.figure(
            "a probe Deployment then gets its ReplicaSet in", f"{reconcile_probe(client):.2f}s"
        )
        self.cli("status", "--kubeconfig", kc, KCM)

        self.step(6, "the article's open problem: every controller manager is gone")
        self.say("Scale the Deployment to 0 (a bad rollout would do the same): the leader")
        self.say("removes its own pods — then nothing is left that could recreate them.")
        labels: dict[str, Any] = {
            "app.kubernetes.io/name": KCM,
            "app.kubernetes.io/managed-by": "kubehoist",
        }
        client.patch(Deployment, KCM, {"spec": {"replicas": 0}}, namespace=NS)
        self.wait(
            "the Deployment's pods to be gone",
            lambda: (
                not list(
                    client.list(
                        Pod,
                        namespace=NS,
                        labels={
                            "app.kubernetes.io/name": KCM,
                            "app.kubernetes.io/managed-by": "kubehoist",
                        },
                    )
                )
            ),
        )
        client.patch(Deployment, KCM, {"spec": {"replicas": 2}}, namespace=NS)
        self.say("Scaled back to 2 — but no controller manager runs to act on it:")
        t0 = time.monotonic()
        try:
            reconcile_probe(client, timeout=30)
            self.figure("circular dependency", "a controller manager came back (unexpected)")
        except KubehoistError:
            pods = list(client.list(Pod, namespace=NS, labels=labels))
            self.figure(
                "circular dependency",
                f"after {time.monotonic() - t0:.0f}s no ReplicaSet for a probe and "
                f"{len(pods)}/2 pods: the controllers are down for good",
            )

        self.step(7, "the answer: kubehoist guard brings a controller manager back by itself")
        self.say("`guard install` puts a small static pod on every control-plane node (the")
        self.say("kubelet runs it with no controller manager). It sees no valid leader and no")
        self.say("Ready replica for --grace (20 s), puts the parked static pod back, and once")
        self.say("the Deployment's replicas are Ready again for --settle, parks it again.")
        t0 = time.monotonic()
        self.cli("guard", "install", "--kubeconfig", kc, "--settle", "10")
        self.figure("guard install on every control-plane node", f"{time.monotonic() - t0:.1f}s")
        took = self.wait(
            "the guard's fallback static pod to lead",
            lambda: self.holder(client).startswith(f"{cp.name}_"),
            timeout=120,
        )
        self.figure("guard installed → its fallback static pod leads", f"{took:.1f}s")
        self.figure(
            "the controllers work again: a probe gets its ReplicaSet in",
            f"{reconcile_probe(client):.2f}s",
        )
        t1 = time.monotonic()
        took = self.wait(
            "the guard to hand back to a Deployment pod",
            lambda: self.holder(client).startswith(f"{KCM}-"),
            timeout=180,
        )
        self.figure(
            "fallback → the Deployment recreated, Ready, settled, handed back, a pod leads",
            f"{time.monotonic() - t1:.1f}s",
        )
        self.cli("status", "--kubeconfig", kc, KCM)

        self.step(8, "kill the leader's process again, now with the guard's reaper")
        self.wait("2 Ready replicas", lambda: self._ready(client) >= 2, timeout=120)
        time.sleep(2)
        old = self.holder(client)
        reaps = self._reaps(client)
        pod = client.get(Pod, old.split("_")[0], namespace=NS)
        kill_container(spec, pod, KCM, signal.SIGKILL)
        took = self.wait("a new leader", lambda: self.holder(client) not in ("", old), timeout=120)
        # Only what was observed: the guard's GuardReap Event for this kill, if any.
        deadline = time.monotonic() + 5
        while (new := self._reaps(client)) <= reaps and time.monotonic() < deadline:
            time.sleep(0.2)
        self.figure(
            "failover after a crash, with the reaper",
            f"{took:.1f}s (the guard reaped: it saw the container end and released the lease)"
            if new > reaps
            else f"{took:.1f}s (no reap was observed: the lease ran out by itself)",
        )

        self.step(9, "the way back: guard uninstall, then rollback, byte for byte")
        self.cli("guard", "uninstall", "--kubeconfig", kc)
        t0 = time.monotonic()
        self.cli("rollback", "--kubeconfig", kc)
        self.figure("rollback, until a static pod leads", f"{time.monotonic() - t0:.1f}s")
        self.cli("status", "--kubeconfig", kc, KCM)

    def _reaps(self, client: Client) -> int:
        """How many reaps the guards' Events count (an Event's count grows on repeats)."""
        try:
            events = client.list(Event, namespace=NS, fields={"reason": "GuardReap"})
            return sum(e.count or 1 for e in events)
        except ApiError:
            return 0

    def _ready(self, client: Client) -> int:
        dep = client.get(Deployment, KCM, namespace=NS)
        return (dep.status.readyReplicas or 0) if dep.status else 0

    def _timeline(self) -> None:
        table = Table(title="measured in this run", show_lines=False)
        table.add_column("what")
        table.add_column("figure")
        for what, value in self.figures:
            table.add_row(what, value)
        self.console.print(table)
        self.say(
            f"demo took {time.monotonic() - self.start:.0f}s "
            f"(finished {dt.datetime.now(dt.UTC):%H:%M:%S} UTC)"
        )
