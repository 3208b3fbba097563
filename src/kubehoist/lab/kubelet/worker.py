"""The pod worker: one asyncio task per pod that sets up its network and volumes,
runs its init containers and then its containers (with probes, restarts and back-off),
and on request stops them (SIGTERM, grace period, SIGKILL) and releases the network.

It owns the pod's runtime state and publishes snapshots of it (`snapshot()`) through
an `on_change` callback; it never talks to the API server itself except through the
`PodApi` it is given for secrets, config maps and tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from kubehoist.lab.binaries import Binaries
from kubehoist.lab.kubelet import images, network, runtime, volumes
from kubehoist.lab.kubelet.ipam import Ipam
from kubehoist.lab.kubelet.launcher import START_ERROR_EXIT
from kubehoist.lab.kubelet.podspec import Container, PodSpec, PodSpecError, Probe
from kubehoist.lab.kubelet.probes import ProbeTarget, ProbeTracker, run_probe
from kubehoist.lab.kubelet.status import (
    WAITING_CREATING,
    ContainerSnapshot,
    PodSnapshot,
    State,
    falls_back_to_logs,
    file_message,
    join_message,
    log_message,
    now,
    terminated_reason,
)
from kubehoist.lab.spec import LabNode, LabSpec

log = logging.getLogger("kubehoist.lab.kubelet")

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
VOLUME_RETRY = 2.0


@dataclass(frozen=True)
class NodeContext:
    """What every pod worker of one node shares."""

    spec: LabSpec
    node: LabNode
    binaries: Binaries
    ipam: Ipam
    api: volumes.VolumeData
    support_dir: Path

    @property
    def node_root(self) -> Path:
        return self.node.root(self.spec.root)


@dataclass
class ContainerRecord:
    spec: Container
    init: bool = False
    restart_count: int = 0
    attempts: int = 0  # starts so far; restart_count == attempts - 1 once started
    container_id: str = ""
    image_id: str = ""
    state: State = WAITING_CREATING
    last_state: State | None = None
    ready: bool = False
    started: bool = False
    process: runtime.ContainerProcess | None = None
    kill_reason: str = ""
    kill_event: asyncio.Event = field(default_factory=asyncio.Event)

    def snapshot(self) -> ContainerSnapshot:
        return ContainerSnapshot(
            name=self.spec.name,
            image=self.spec.image,
            image_id=self.image_id,
            container_id=self.container_id,
            state=self.state,
            last_state=self.last_state,
            ready=self.ready,
            started=self.started,
            restart_count=self.restart_count,
        )


class PodWorker:
    def __init__(
        self,
        ctx: NodeContext,
        pod: PodSpec,
        *,
        labels: tuple[tuple[str, str], ...] = (),
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.pod = pod
        self.labels = labels
        self._on_change = on_change
        self.start_time = now()
        self.pod_ip = ctx.node.ip if pod.host_network else ""
        self.netns = network.netns_path(ctx.node.netns) if pod.host_network else ""
        self.sandbox_ready = False
        self.message = ""
        self.reason = ""
        self.init = [ContainerRecord(c, init=True) for c in pod.init_containers]
        self.containers = [ContainerRecord(c) for c in pod.containers]
        self.terminating = asyncio.Event()
        self.done = asyncio.Event()  # every process of the pod has stopped
        self.grace: float = pod.grace_seconds
        self._own_ip = False

    # --- what others see --------------------------------------------------------------
    @property
    def hostname(self) -> str:
        if self.pod.host_network:
            return self.ctx.node.name
        return self.pod.hostname or self.pod.name

    def snapshot(self) -> PodSnapshot:
        return PodSnapshot(
            restart_policy=self.pod.restart_policy,
            pod_ip=self.pod_ip,
            host_ip=self.ctx.node.ip,
            start_time=self.start_time,
            sandbox_ready=self.sandbox_ready,
            init_containers=tuple(c.snapshot() for c in self.init),
            containers=tuple(c.snapshot() for c in self.containers),
            message=self.message,
            reason=self.reason,
        )

    def records(self) -> list[ContainerRecord]:
        return [*self.init, *self.containers]

    def terminate(self, grace: float | None = None) -> None:
        """Ask the pod to stop; `grace` overrides terminationGracePeriodSeconds."""
        if grace is not None:
            self.grace = min(self.grace, grace) if self.terminating.is_set() else grace
        self.terminating.set()

    def _changed(self) -> None:
        self._on_change()

    # --- the pod's life ---------------------------------------------------------------
    async def run(self) -> None:
        try:
            if await self._prepare():
                for rec in self.init:
                    if not await self._run_container(rec):
                        break
                else:
                    async with asyncio.TaskGroup() as tg:
                        for rec in self.containers:
                            tg.create_task(self._run_container(rec))
        finally:
            await asyncio.shield(self._teardown())
        await self.terminating.wait()

    async def _teardown(self) -> None:
        for rec in self.records():
            if rec.process is not None:
                with contextlib.suppress(Exception):
                    code = await rec.process.stop(0)
                    rec.process.record_end(code, terminated_reason(code), now())
        if self._own_ip:
            with contextlib.suppress(Exception):
                await network.teardown_pod_network(self.ctx.spec, self.ctx.node, self.pod_ip)
            self.ctx.ipam.release(self.pod.uid)
            self._own_ip = False
        self.sandbox_ready = False
        self.done.set()
        self._changed()

    async def _prepare(self) -> bool:
        """Network and volumes; False if the pod was asked to stop first."""
        if not self.pod.host_network:
            ip = self.ctx.ipam.allocate(self.pod.uid)
            self._own_ip = True
            self.netns = await network.setup_pod_network(self.ctx.spec, self.ctx.node, ip)
            self.pod_ip = ip
        self.sandbox_ready = True
        self._changed()
        fields = volumes.PodFields(pod_ip=self.pod_ip, host_ip=self.ctx.node.ip, labels=self.labels)
        while not self.terminating.is_set():
            try:
                await volumes.materialize(self.ctx.node_root, self.pod, fields, self.ctx.api)
                return True
            except (volumes.VolumeError, PodSpecError) as exc:
                for rec in self.records():
                    rec.state = State("waiting", "ContainerCreating", f"MountVolume: {exc}")
                self._changed()
                await self._sleep(VOLUME_RETRY)
        return False

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to terminate; True if the sleep ran out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.terminating.wait()
                return False
        return True

    def _restart_wanted(self, rec: ContainerRecord, exit_code: int) -> bool:
        if rec.init:
            return exit_code != 0 and self.pod.restart_policy != "Never"
        if self.pod.restart_policy == "Always":
            return True
        if self.pod.restart_policy == "OnFailure":
            return exit_code != 0
        return False

    async def _run_container(self, rec: ContainerRecord) -> bool:
        """Run one container through its restarts; True if it completed successfully
        (only meaningful for init containers)."""
        backoff = 0.0
        while not self.terminating.is_set():
            try:
                image = images.resolve(
                    rec.spec.image,
                    lab_root=self.ctx.spec.root,
                    binaries=self.ctx.binaries,
                    support_dir=self.ctx.support_dir,
                )
            except images.ImageError as exc:
                rec.state = State("waiting", "ErrImagePull", str(exc))
                self._changed()
                backoff = min(max(backoff * 2, BACKOFF_INITIAL), BACKOFF_MAX)
                if not await self._sleep(2.0):
                    break
                rec.state = State(
                    "waiting", "ImagePullBackOff", f'Back-off pulling image "{rec.spec.image}"'
                )
                self._changed()
                await self._sleep(backoff)
                continue
            try:
                proc = await self._start(rec, image)
            except (PodSpecError, volumes.VolumeError, OSError) as exc:
                rec.state = State("waiting", "CreateContainerConfigError", str(exc))
                self._changed()
                await self._sleep(VOLUME_RETRY)
                continue
            exit_code, reason = await self._supervise(rec, proc)
            finished = now()
            message = ""
            if exit_code == START_ERROR_EXIT and (
                line := runtime.last_log_line(proc.log)
            ).startswith("launcher:"):
                reason, message = "StartError", line.removeprefix("launcher:").strip()
            reason = reason or terminated_reason(exit_code)
            message = join_message(
                message,
                termination_message(rec.spec, proc.termination_file, proc.log, exit_code, reason),
            )
            proc.record_end(exit_code, reason, finished)
            rec.state = State(
                "terminated",
                reason,
                message,
                exit_code=exit_code,
                started_at=proc.started_at,
                finished_at=finished,
                container_id=proc.container_id,
            )
            rec.ready = False
            rec.process = None
            proc.cleanup()
            log.info(
                "%s/%s: container %s exited %d (%s)",
                self.ctx.node.name,
                self.pod.key,
                rec.spec.name,
                exit_code,
                rec.state.reason,
            )
            self._changed()
            if self.terminating.is_set() or not self._restart_wanted(rec, exit_code):
                return exit_code == 0
            ran = (finished - proc.started_at).total_seconds()
            if ran > BACKOFF_RESET_AFTER:
                backoff = 0.0
            if backoff > 0:
                rec.last_state = rec.state
                rec.state = State(
                    "waiting",
                    "CrashLoopBackOff",
                    f"back-off {backoff:g}s restarting failed container={rec.spec.name} "
                    f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                )
                self._changed()
                if not await self._sleep(backoff):
                    break
            backoff = min(max(backoff * 2, BACKOFF_INITIAL), BACKOFF_MAX)
        return False

    async def _env(self, rec: ContainerRecord, image: images.Image) -> dict[str, str]:
        env = runtime.base_env(self.pod, image, self.hostname)
        fields = volumes.PodFields(pod_ip=self.pod_ip, host_ip=self.ctx.node.ip, labels=self.labels)
        for var in rec.spec.env:
            if var.field_path is not None:
                env[var.name] = volumes.field_value(self.pod, fields, var.field_path)
            elif var.key_ref is not None:
                ref = var.key_ref
                data = await (
                    self.ctx.api.secret(self.pod.namespace, ref.name)
                    if ref.kind == "secret"
                    else self.ctx.api.config_map(self.pod.namespace, ref.name)
                )
                if data is None or ref.key not in data:
                    if ref.optional:
                        continue
                    raise PodSpecError(f'{ref.kind} "{ref.name}" key "{ref.key}" not found')
                env[var.name] = data[ref.key].decode(errors="replace")
            else:
                env[var.name] = runtime.expand(var.value or "", env)
        return env

    async def _start(self, rec: ContainerRecord, image: images.Image) -> runtime.ContainerProcess:
        root = self.ctx.node_root
        env = await self._env(rec, image)
        mounts = volumes.plan_mounts(root, self.pod, rec.spec)
        volumes.ensure_sub_paths(mounts, root, self.pod, rec.spec)
        state_dir = (
            volumes.pod_dir(root, self.pod.uid) / "containers" / rec.spec.name / str(rec.attempts)
        )
        if rec.attempts > 0:
            rec.restart_count += 1
            if rec.state.kind == "terminated":
                rec.last_state = rec.state
        spec = runtime.launch_spec(
            container=rec.spec,
            image=image,
            env=env,
            hostname=self.hostname,
            pod_ip=self.pod_ip,
            netns=self.netns,
            mounts=mounts,
            state_dir=state_dir,
        )
        identity = {
            "node": self.ctx.node.name,
            "namespace": self.pod.namespace,
            "pod": self.pod.name,
            "podUID": self.pod.uid,
            "container": rec.spec.name,
            "restartCount": rec.restart_count,
            "timeZone": env.get("TZ"),
        }
        proc = await runtime.start(
            spec,
            state_dir,
            runtime.log_path(root, self.pod, rec.spec.name, rec.restart_count),
            identity,
        )
        rec.attempts += 1
        rec.process = proc
        rec.container_id = proc.container_id
        rec.image_id = f"lab://{image.program}@{image.name}"
        rec.state = State("running", started_at=proc.started_at)
        rec.started = rec.spec.startup is None
        rec.ready = rec.started and rec.spec.readiness is None
        rec.kill_reason = ""
        rec.kill_event = asyncio.Event()
        log.info(
            "%s/%s: started container %s (%s, %s)",
            self.ctx.node.name,
            self.pod.key,
            rec.spec.name,
            proc.container_id,
            image.program,
        )
        self._changed()
        return proc

    async def _supervise(
        self, rec: ContainerRecord, proc: runtime.ContainerProcess
    ) -> tuple[int, str]:
        """Wait for the container to exit, to be killed by a failed probe, or to be
        stopped because the pod terminates; returns its exit code and a reason."""
        env = dict(runtime.base_env(self.pod, images.Image(name="", program=""), self.hostname))
        target = ProbeTarget(
            netns=self.netns or "/proc/self/ns/net", pod_ip=self.pod_ip, pid=None, env=env
        )
        started_event = asyncio.Event()
        if rec.started:
            started_event.set()
        async with asyncio.TaskGroup() as tg:
            probe_tasks = []
            for kind, probe in (
                ("startup", rec.spec.startup),
                ("liveness", rec.spec.liveness),
                ("readiness", rec.spec.readiness),
            ):
                if probe is not None:
                    probe_tasks.append(
                        tg.create_task(
                            self._probe_loop(rec, proc, kind, probe, target, started_event)
                        )
                    )
            exited = tg.create_task(proc.wait())
            killed = tg.create_task(rec.kill_event.wait())
            stopping = tg.create_task(self.terminating.wait())
            await asyncio.wait({exited, killed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for t in (*probe_tasks, killed, stopping):
                t.cancel()
            if not exited.done():
                exited.cancel()
        if proc.process.returncode is not None:
            return await proc.wait(), ""
        grace = self.grace
        code = await proc.stop(grace)
        return code, ""

    async def _probe_loop(
        self,
        rec: ContainerRecord,
        proc: runtime.ContainerProcess,
        kind: str,
        probe: Probe,
        target: ProbeTarget,
        started_event: asyncio.Event,
    ) -> None:
        if kind != "startup":
            await started_event.wait()
        await asyncio.sleep(probe.initial_delay)
        tracker = ProbeTracker(
            success_threshold=probe.success_threshold if kind == "readiness" else 1,
            failure_threshold=probe.failure_threshold,
        )
        try:
            port = rec.spec.port_number(probe.port) if probe.kind in ("http", "tcp", "grpc") else 0
        except PodSpecError as exc:
            rec.state = replace(rec.state, message=str(exc))
            return
        while True:
            result = await run_probe(probe, replace(target, pid=proc.pid1), port)
            verdict = tracker.record(result.ok)
            if not result.ok:
                log.info(
                    "%s/%s: %s probe of %s failed: %s",
                    self.ctx.node.name,
                    self.pod.key,
                    kind,
                    rec.spec.name,
                    result.message,
                )
            if kind == "startup" and verdict is True:
                rec.started = True
                rec.ready = rec.spec.readiness is None
                started_event.set()
                self._changed()
                return
            if kind in ("startup", "liveness") and verdict is False:
                rec.kill_reason = f"{kind} probe failed: {result.message}"
                log.info(
                    "%s/%s: container %s failed %s probe, will be restarted",
                    self.ctx.node.name,
                    self.pod.key,
                    rec.spec.name,
                    kind,
                )
                rec.kill_event.set()
                return
            if kind == "readiness" and verdict is not None and rec.ready != verdict:
                rec.ready = verdict
                self._changed()
            await asyncio.sleep(probe.period)


def termination_message(
    container: Container, message_file: Path, log: Path, exit_code: int, reason: str
) -> str:
    """What an ended container left as its termination message, by its
    terminationMessagePolicy: its message file, else (FallbackToLogsOnError, after a
    failure) the tail of its log."""
    fallback = falls_back_to_logs(container.termination_message_policy, exit_code, reason)
    data: bytes | None = None
    error = ""
    if container.termination_message_path:
        data, error = runtime.read_termination_file(message_file)
    message, check_logs = file_message(data, error=error, fallback=fallback)
    if not check_logs:
        return message
    tail, error = runtime.read_log_tail(log)
    return error or log_message(tail)


def started_at(rec: ContainerRecord) -> datetime | None:
    return rec.state.started_at if rec.state.kind == "running" else None
