"""The lab supervisor: one long-lived process per lab that owns everything running.

`lab up` starts it detached; it sets up the network and the control-plane endpoint
(a load balancer in front of the API servers), boots every node (its init runs
containerd and the kubelet), makes the cluster with kubeadm on the first boot (`init`
on the first control plane, `join` on every other node: kubeadm.py), waits for the
nodes to be Ready, and tears all of it down on SIGTERM (`lab down`). etcd and
kube-apiserver are kubeadm's static pods on each control plane's kubelet. It holds an exclusive lock
on `run/supervisor.lock` for its whole life: that lock is how other commands know a
lab is running, and it is released by the kernel even if the supervisor is killed.
Its progress and the pids it runs go to `run/state.json`. What other commands read of
it (that lock, that state file, the host's kubeconfigs, the control planes' static
pods) is in `kubehoist.lab.labstate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import ssl
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from kubehoist.constants import MIRROR_ANNOTATION
from kubehoist.errors import KubehoistError
from kubehoist.kube.objects import is_ready
from kubehoist.lab import cgroups, forward, images, kubeadm, netns, nodeconfig
from kubehoist.lab import node as labnode
from kubehoist.lab.binaries import Binaries
from kubehoist.lab.labstate import host_kubeconfig, lock_path, state_path
from kubehoist.lab.logkeeper import LogKeeper
from kubehoist.lab.procs import die_with_parent
from kubehoist.lab.spec import API_PORT, LabNode, LabSpec

log = logging.getLogger("kubehoist.lab")


# --- the supervisor ------------------------------------------------------------------
class Supervisor:
    def __init__(self, spec: LabSpec, binaries: Binaries) -> None:
        self.spec = spec
        self.binaries = binaries
        self.servers: list[asyncio.Server] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.node_procs: dict[str, asyncio.subprocess.Process] = {}
        self.keepers: dict[str, LogKeeper] = {}
        self._stuck_since: dict[str, float] = {}
        self._restarted: set[str] = set()
        self.clients: list[AsyncClient] = []
        self.phase = "starting"
        self.message = ""
        self.started = time.time()
        self._stop = asyncio.Event()
        self._booted = datetime.now(UTC)  # when the nodes were last booted

    # state -------------------------------------------------------------------------
    def write_state(self) -> None:
        data = {
            "phase": self.phase,
            "message": self.message,
            "supervisor_pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "forwards": len(self.servers),
            "nodes": {
                name: {"pid": p.pid, "running": p.returncode is None}
                for name, p in self.node_procs.items()
            },
        }
        tmp = state_path(self.spec).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(state_path(self.spec))

    # steps -------------------------------------------------------------------------
    @staticmethod
    def _inotify() -> None:
        """Every kubelet and containerd holds inotify instances; the kernel's default of
        128 per user allows about ten lab nodes on the machine. Raise it as kubelet
        hosts commonly do (never lower it)."""
        knob = Path("/proc/sys/fs/inotify/max_user_instances")
        with contextlib.suppress(OSError, ValueError):
            if int(knob.read_text()) < 8192:
                knob.write_text("8192\n")

    def _network(self) -> None:
        self._inotify()
        try:  # what a crashed lab left behind
            cgroups.cleanup(self.spec)
        except KubehoistError as exc:
            log.warning("leftovers of an earlier run: %s", exc.message)
        netns.teardown(self.spec)
        netns.create_lan(self.spec)
        for node in self.spec.nodes:
            netns.create_node(self.spec, node)
        netns.route_pod_networks(self.spec)

    async def _start_balancer(self) -> None:
        """The control-plane endpoint: one load balancer in front of every control
        plane's API server, listening at the LAN gateway (controlPlaneEndpoint) and at
        the host's port."""
        spec = self.spec
        balancer = forward.Balancer(
            spec.lan_netns, tuple((n.ip, API_PORT) for n in spec.control_planes)
        )
        for listen_netns, host, port in (
            (spec.lan_netns, spec.lan_gateway, API_PORT),
            (None, "127.0.0.1", spec.host_port),
        ):
            try:
                self.servers.append(await balancer.serve(listen_netns, host, port))
            except OSError as exc:
                where = f"{listen_netns or 'host'}:{host}:{port}"
                raise KubehoistError(f"cannot listen at {where}: {exc.strerror}") from exc
        self.tasks.append(asyncio.create_task(balancer.check_forever(), name="balancer-checks"))

    def _readyz(self) -> bool:
        url = f"https://127.0.0.1:{self.spec.host_port}/readyz"
        try:  # no CA before kubeadm init made it
            ctx = ssl.create_default_context(cafile=str(self.spec.pki_dir / "ca.crt"))
            with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _not_ready_apiservers(self) -> list[str]:
        """The control planes whose own API server does not answer /readyz with 200
        (asked from the LAN, as the load balancer asks)."""
        return [
            n.name
            for n in self.spec.control_planes
            if not forward.readyz_check(self.spec.lan_netns, n.ip, API_PORT, timeout=5)
        ]

    async def wait_ready(self, timeout: float = 300) -> None:
        """Until the API answers at the host's port and every control plane's own API
        server is ready (a control plane that just joined may still be settling)."""
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        while time.monotonic() < deadline:
            waiting = ["the host's port"]
            if await asyncio.to_thread(self._readyz):
                waiting = await asyncio.to_thread(self._not_ready_apiservers)
                if not waiting:
                    return
            await asyncio.sleep(0.5)
        raise KubehoistError(
            f"kube-apiserver not ready after {timeout:.0f}s on {', '.join(waiting)} "
            f"(see {self.spec.root}/nodes/<node>/var/log/pods/)"
        )

    def _client_for(self, kubeconfig: Path) -> AsyncClient:
        client = AsyncClient(KubeConfig.from_file(str(kubeconfig)), trust_env=False)
        self.clients.append(client)
        return client

    def _node_images(self) -> list[Path]:
        archives: list[Path] = images.lab_images(self.binaries, self.spec.kubernetes_version)
        # and the images built in this lab (`lab image build`), as a machine keeps them
        return archives + sorted(images.built_images(self.spec.root).values())

    def _pause_image(self) -> str:
        return images.kubeadm_images(self.binaries, self.spec.kubernetes_version)["pause"]

    async def _boot_nodes(self) -> None:
        """Boot every node: its init starts containerd, imports the lab's images and
        starts the kubelet, which registers the Node and keeps it Ready."""
        loop = asyncio.get_running_loop()
        self._booted = datetime.now(UTC).replace(microsecond=0)  # conditions: whole seconds
        archives = await loop.run_in_executor(None, self._node_images)
        labnode.images_file(self.spec).write_text("".join(f"{a}\n" for a in archives))
        cfg = nodeconfig.NodeConfig(
            containerd_bin_dir=self.binaries.path("containerd").parent,
            kubelet=self.binaries.path("kubelet"),
            containerd=self.binaries.path("containerd"),
            ctr=self.binaries.path("ctr"),
            crictl=self.binaries.path("crictl"),
            kubeadm=self.binaries.path("kubeadm"),
            # containerd's sandbox image: the pause image this version's kubeadm names
            # (and the lab builds), never one to pull: the lab has no registry.
            pause_image=await loop.run_in_executor(None, self._pause_image),
        )
        for node in self.spec.nodes:
            nodeconfig.write_config(self.spec, node, cfg)
            cgroups.make_cgroups(self.spec, node)
            labnode.pid_file(self.spec, node).unlink(missing_ok=True)
            labnode.booted_file(self.spec, node).unlink(missing_ok=True)
            logf = open(self.spec.logs_dir / f"node-{node.name}.log", "ab")  # noqa: SIM115
            try:
                self.node_procs[node.name] = await asyncio.create_subprocess_exec(
                    *labnode.boot_argv(self.spec, node),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    preexec_fn=die_with_parent,
                )
            finally:
                logf.close()

    async def _wait_booted(self, nodes: tuple[LabNode, ...], timeout: float = 300) -> None:
        """Until these nodes' containerd runs with the lab's images (their init says so)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_inits()
            waiting = [n.name for n in nodes if not labnode.booted_file(self.spec, n).exists()]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise KubehoistError(
                    f"nodes not booted after {timeout:.0f}s: {', '.join(waiting)} "
                    f"(see {self.spec.root}/nodes/<node>/var/log/containerd.log)"
                )
            await asyncio.sleep(0.2)

    def _check_inits(self) -> None:
        for name, proc in self.node_procs.items():
            if proc.returncode is not None:
                raise KubehoistError(
                    f"node {name}'s init exited {proc.returncode} "
                    f"(see {self.spec.logs_dir / f'node-{name}.log'})"
                )

    async def _kubeadm(self) -> None:
        """Make the cluster, once in the lab's life: `kubeadm init` on the first control
        plane as soon as it booted, then `kubeadm join --control-plane` on the others one
        after the other (each adds its etcd member) while the workers `kubeadm join`
        beside them, each once it booted (the other nodes import their images meanwhile)."""
        spec = self.spec
        first = spec.api_node
        await self._wait_booted((first,))
        if not kubeadm.is_done(spec, first):
            self.message = f"kubeadm init on {first.name}"
            self.write_state()
            await asyncio.to_thread(kubeadm.init, spec)
        host_kubeconfig(
            spec, first.root(spec.root) / "etc/kubernetes/admin.conf", spec.admin_kubeconfig
        )
        planes = [n for n in spec.control_planes[1:] if not kubeadm.is_done(spec, n)]
        workers = [n for n in spec.workers if not kubeadm.is_done(spec, n)]
        if planes or workers:
            self.message = f"kubeadm join: {', '.join(n.name for n in planes + workers)}"
            self.write_state()

        async def join(node: LabNode) -> None:
            await self._wait_booted((node,))
            await asyncio.to_thread(kubeadm.join, spec, node)

        async def control_planes() -> None:
            for node in planes:
                await join(node)

        await asyncio.gather(control_planes(), *(join(n) for n in workers))
        await self._wait_booted(spec.nodes)

    def _kubelet_stuck(self, name: str) -> None:
        """A kubelet whose CSI plugin gave up before the Node existed stays NotReady; the
        kubelet means to exit then and be restarted (csi_plugin.go) but may not: restart
        it once, as systemd would, after giving it 30 s."""
        first = self._stuck_since.setdefault(name, time.monotonic())
        if time.monotonic() - first > 30 and name not in self._restarted:
            self._restarted.add(name)
            proc = self.node_procs.get(name)
            if proc is not None and proc.returncode is None:
                log.warning("node %s: kubelet stuck on CSINode initialisation; restarting it", name)
                proc.send_signal(signal.SIGHUP)

    async def _wait_nodes_ready(self, timeout: float) -> None:
        from lightkube.resources.core_v1 import Node

        client = self._client_for(self.spec.admin_kubeconfig)
        deadline = time.monotonic() + timeout
        want = {n.name for n in self.spec.nodes}
        ready: set[str] = set()
        while time.monotonic() < deadline:
            self._check_inits()
            ready = set()
            with contextlib.suppress(Exception):
                async for node in client.list(Node):
                    assert node.metadata is not None and node.metadata.name is not None
                    name = node.metadata.name
                    conds = (node.status.conditions if node.status else None) or []
                    # Ready as posted by this boot's kubelet: a Node keeps the condition
                    # of the kubelet before the lab stopped (or crashed) for 40 s or more.
                    if any(
                        c.type == "Ready"
                        and c.status == "True"
                        and c.lastHeartbeatTime is not None
                        and c.lastHeartbeatTime >= self._booted
                        for c in conds
                    ):
                        ready.add(name)
                    elif any("failed to initialize CSINode" in (c.message or "") for c in conds):
                        self._kubelet_stuck(name)
            if want <= ready:
                return
            self.message = f"waiting for nodes: {', '.join(sorted(want - ready))}"
            self.write_state()
            await asyncio.sleep(0.5)
        raise KubehoistError(
            f"nodes not Ready after {timeout:.0f}s: {', '.join(sorted(want - ready))} "
            f"(see {self.spec.root}/nodes/<node>/var/log/kubelet.log)"
        )

    def _static_pods_wanted(self) -> set[str]:
        """The mirror pods the control planes' kubelets are to make: one per manifest in
        each control plane's manifests directory (a parked component has none)."""
        wanted: set[str] = set()
        for node in self.spec.control_planes:
            for path in node.manifests_dir(self.spec.root).glob("*.yaml"):
                wanted.add(f"{path.stem}-{node.name}")
        return wanted

    async def _wait_static_pods(self, timeout: float) -> None:
        """Until every control plane's static pods have Ready mirror pods: a control
        plane that just joined has its API server and etcd up while the kubelet may
        still be making the controller manager's and the scheduler's mirror pods."""
        from lightkube.resources.core_v1 import Pod

        client = self._client_for(self.spec.admin_kubeconfig)
        deadline = time.monotonic() + timeout
        missing: set[str] = set()
        while time.monotonic() < deadline:
            self._check_inits()
            want = await asyncio.to_thread(self._static_pods_wanted)
            ready: set[str] = set()
            with contextlib.suppress(Exception):
                async for pod in client.list(Pod, namespace="kube-system"):
                    meta = pod.metadata
                    if meta and MIRROR_ANNOTATION in (meta.annotations or {}) and is_ready(pod):
                        ready.add(meta.name or "")
            missing = want - ready
            if not missing:
                return
            self.message = f"waiting for static pods: {', '.join(sorted(missing))}"
            self.write_state()
            await asyncio.sleep(0.5)
        raise KubehoistError(
            f"static pods without a Ready mirror pod after {timeout:.0f}s: "
            f"{', '.join(sorted(missing))} (see {self.spec.root}/nodes/<node>/var/log/pods/)"
        )

    def _start_log_keepers(self) -> None:
        for node in self.spec.nodes:
            keeper = LogKeeper.for_node(self.spec, node, self.binaries.path("crictl"))
            self.keepers[node.name] = keeper
            self.tasks.append(asyncio.create_task(keeper.run(), name=f"logkeeper-{node.name}"))

    async def _watch_tasks(self) -> None:
        """Log (and keep the state file fresh about) background tasks that die."""
        while not self._stop.is_set():
            for task in self.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("task %s died: %r", task.get_name(), task.exception())
            self.write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=5)

    # life --------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # kubeadm runs in threads (one per joining node, minutes each) beside the load
        # balancer's connects and health checks and the log keepers: room for all.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            self.write_state()
            self._network()
            await self._start_balancer()
            self.message = "booting nodes"
            self.write_state()
            await self._boot_nodes()
            self._start_log_keepers()
            await self._kubeadm()
            self.message = "waiting for kube-apiserver"
            self.write_state()
            await self.wait_ready()
            await self._wait_nodes_ready(timeout=240)
            await self._wait_static_pods(timeout=240)
            self.phase, self.message = "ready", ""
            self.write_state()
            log.info("lab ready")
            await self._watch_tasks()
        except Exception as exc:
            self.phase = "failed"
            self.message = exc.message if isinstance(exc, KubehoistError) else repr(exc)
            log.exception("lab failed")
            self.write_state()
        finally:
            await self.shutdown()

    async def _power_off_nodes(self) -> None:
        """Stop every node as a machine shuts down: its init stops the kubelet and the
        pods (containerd sees them exit), the log keepers take their last look, then
        containerd stops. What is left is killed with the node's cgroups afterwards."""
        running = {n: p for n, p in self.node_procs.items() if p.returncode is None}
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for name in running:
            marker = labnode.pods_stopped_file(self.spec, self.spec.node(name))
            while not marker.exists() and time.monotonic() < deadline:
                if running[name].returncode is not None:
                    break
                await asyncio.sleep(0.1)
        for task in self.tasks:
            if task.get_name().startswith("logkeeper-"):
                task.cancel()
        for name, keeper in self.keepers.items():
            try:
                await asyncio.to_thread(keeper.sweep_once, final=True)
            except Exception as exc:
                log.warning("last look of node %s's log keeper: %r", name, exc)
            keeper.close()
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def shutdown(self) -> None:
        log.info("stopping the lab")
        await self._power_off_nodes()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        for server in self.servers:
            server.close()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await cleanup_leftovers(self.spec)
        if self.phase != "failed":
            self.phase = "stopped"
        self.write_state()


async def cleanup_leftovers(spec: LabSpec) -> None:
    """Remove what a lab may leave behind: every process of its nodes (containerd's
    shims and the containers outlive containerd), their cgroups, the namespaces."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, cgroups.cleanup, spec)
    except Exception as exc:
        log.warning("cleanup of the nodes: %r", exc)
    netns.teardown(spec)


_HELD_LOCKS: list[IO[str]] = []


def supervise(spec: LabSpec, binaries: Binaries) -> int:
    """The supervisor's main (in the detached process)."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path(spec), "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another supervisor runs this lab")
        return 1
    # Held until the process is gone: were it closed when this function returns, `lab
    # down` would see the lab stopped while the interpreter is still shutting down.
    _HELD_LOCKS.append(lock)
    (spec.run_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
    asyncio.run(Supervisor(spec, binaries).run())
    return 0


def purge(spec: LabSpec) -> None:
    shutil.rmtree(spec.root, ignore_errors=True)
