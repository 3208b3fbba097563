"""The container runtime of the lab: how a container's command, environment and
launch spec are derived (pure), and starting and stopping one launcher process per
container, with its output appended to the container's log file.

Container IDs are `lab://<32 hex>`, new for every start, as a real runtime's are.
Logs live where the kubelet keeps them:
`<node-root>/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`
(the raw output of both streams, without the CRI timestamp prefix). Next to each log,
`<restartCount>.state.json` records that start's lifetime (`STATE_FIELDS`): written
when it starts, rewritten (atomically) with `finishedAt`, `exitCode` and `reason` when
it ends; `kubehoist.lab.leaders` reads both.

Every start also gets an empty termination message file, `termination-log` in the
start's state directory, bind-mounted read-write at the container's
`terminationMessagePath`; the kubelet reads it when the container ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubehoist.lab.kubelet.images import Image
from kubehoist.lab.kubelet.launcher import PARENT_ENV, LaunchSpec, Mount
from kubehoist.lab.kubelet.podspec import Container, PodSpec
from kubehoist.lab.kubelet.status import (
    MAX_CONTAINER_MESSAGE_BYTES,
    MAX_LOG_MESSAGE_BYTES,
    now,
)
from kubehoist.lab.spec import API_PORT, LAN_SUBNET

_logger = logging.getLogger("kubehoist.lab.kubelet")

CONTAINER_ID_PREFIX = "lab://"
_SRC_DIR = str(Path(__file__).resolve().parents[3])


def new_container_id() -> str:
    return CONTAINER_ID_PREFIX + uuid.uuid4().hex


def log_dir(node_root: Path, pod: PodSpec, container: str) -> Path:
    return node_root / "var" / "log" / "pods" / f"{pod.namespace}_{pod.name}_{pod.uid}" / container


REMOVED_LOGS = ("var", "log", "pods-removed")


def archive_pod_logs(node_root: Path, pod_log_dir: Path) -> Path | None:
    """Keep the logs of a pod the kubelet is done with (a deleted pod, a removed static
    pod, or a pod of an earlier kubelet run) under
    `var/log/pods-removed/<time ns>/<namespace>_<pod>_<uid>/`, so what the components
    logged stays readable after their pods are gone (a real kubelet deletes them)."""
    if not pod_log_dir.is_dir():
        return None
    dest = node_root.joinpath(*REMOVED_LOGS) / str(time.time_ns()) / pod_log_dir.name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(pod_log_dir, dest)
    except OSError:
        shutil.rmtree(pod_log_dir, ignore_errors=True)
        return None
    return dest


def archive_all_pod_logs(node_root: Path) -> list[Path]:
    """At a kubelet's start: the logs of the previous run's pods, archived (a pod that
    runs again starts its restart count and its log afresh)."""
    pods = node_root / "var" / "log" / "pods"
    if not pods.is_dir():
        return []
    return [d for d in (archive_pod_logs(node_root, p) for p in sorted(pods.iterdir())) if d]


def log_path(node_root: Path, pod: PodSpec, container: str, restart_count: int) -> Path:
    return log_dir(node_root, pod, container) / f"{restart_count}.log"


STATE_SUFFIX = ".state.json"
STATE_FIELDS = (
    "containerID",
    "startedAt",
    "finishedAt",
    "exitCode",
    "reason",
    "node",
    "namespace",
    "pod",
    "podUID",
    "container",
    "restartCount",
    "timeZone",
)
"""Keys of a state file. `startedAt`/`finishedAt` are RFC 3339 UTC with microseconds;
`finishedAt`, `exitCode` and `reason` are null while the container runs; `timeZone`
is the container's `TZ` if its environment sets one, else null (the host's
/etc/localtime, which the container sees through its root filesystem)."""


TERMINATION_FILE = "termination-log"


def termination_file(state_dir: Path) -> Path:
    """The host side of a start's termination message file."""
    return state_dir / TERMINATION_FILE


def state_path(log: Path) -> Path:
    """`<restartCount>.state.json` next to `<restartCount>.log`."""
    return log.with_name(log.name.removesuffix(".log") + STATE_SUFFIX)


def precise_timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def close_stale_states(node_root: Path) -> list[Path]:
    """Mark as ended the state files of containers a dead kubelet left without an end
    (their processes died with it): reason `Unknown`, exit code null, `finishedAt` the
    last write to the log (a lower bound), `finishedAtEstimated` true. Only for a node
    whose kubelet is not running. Returns the files changed."""
    changed = []
    for path in sorted((node_root / "var" / "log" / "pods").glob(f"*/*/*{STATE_SUFFIX}")):
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("finishedAt"):
                continue
            log = path.with_name(path.name.removesuffix(STATE_SUFFIX) + ".log")
            try:
                end = datetime.fromtimestamp(log.stat().st_mtime, UTC)
            except OSError:
                end = datetime.fromisoformat(str(doc["startedAt"]))
            doc.update(
                finishedAt=precise_timestamp(end),
                exitCode=None,
                reason="Unknown",
                finishedAtEstimated=True,
            )
            write_json_atomic(path, doc)
        except (OSError, ValueError, KeyError) as exc:
            _logger.warning("container state %s: %s", path, exc)
            continue
        changed.append(path)
    return changed


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write `doc` to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`, unknown names stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def argv_for(container: Container, image: Image, env: Mapping[str, str]) -> tuple[str, ...]:
    """command/args over the image's ENTRYPOINT/CMD, by Kubernetes' rules."""
    if container.command:
        argv = container.command + container.args
    elif container.args:
        argv = image.entrypoint + container.args
    else:
        argv = image.entrypoint + image.cmd
    return tuple(expand(a, env) for a in argv)


def base_env(pod: PodSpec, image: Image, hostname: str) -> dict[str, str]:
    """The environment before the container's own `env`: the image's, HOSTNAME, and
    the in-cluster API address. The lab has no kube-proxy, so KUBERNETES_SERVICE_HOST
    points at the control-plane endpoint rather than the `kubernetes` Service's IP."""
    env = dict(image.env)
    env["HOSTNAME"] = hostname
    endpoint = str(LAN_SUBNET.network_address + 1)
    env.update(
        {
            "KUBERNETES_SERVICE_HOST": endpoint,
            "KUBERNETES_SERVICE_PORT": str(API_PORT),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(API_PORT),
            "KUBERNETES_PORT": f"tcp://{endpoint}:{API_PORT}",
        }
    )
    return env


def hosts_file(pod_ip: str, hostname: str) -> str:
    return (
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{pod_ip}\t{hostname}\n"
    )


def termination_mount(container: Container, state_dir: Path) -> tuple[Mount, ...]:
    """The termination message file at `terminationMessagePath`, writable whatever the
    container's other mounts and root filesystem (after the volumes, as the kubelet
    orders them)."""
    if not container.termination_message_path:
        return ()
    return (
        Mount(
            source=str(termination_file(state_dir)),
            target=container.termination_message_path,
            read_only=False,
        ),
    )


def launch_spec(
    *,
    container: Container,
    image: Image,
    env: Mapping[str, str],
    hostname: str,
    pod_ip: str,
    netns: str,
    mounts: tuple[Mount, ...],
    state_dir: Path,
) -> LaunchSpec:
    return LaunchSpec(
        argv=argv_for(container, image, env),
        env=tuple(env.items()),
        rootfs=str(state_dir / "rootfs"),
        hostname=hostname,
        pid_file=str(state_dir / "pid"),
        netns=netns,
        working_dir=container.working_dir or image.working_dir,
        image_files=tuple(
            Mount(source=str(f.source), target=f.target, read_only=True) for f in image.files
        ),
        mounts=(
            *(Mount(source=str(b.source), target=b.target, read_only=True) for b in image.binds),
            *mounts,
            *termination_mount(container, state_dir),
        ),
        hosts=hosts_file(pod_ip, hostname),
        run_as_user=container.run_as_user,
        run_as_group=container.run_as_group,
        supplemental_groups=container.supplemental_groups,
        read_only_root=container.read_only_root,
    )


@dataclass
class ContainerProcess:
    """One start of a container: its launcher process and where its traces are."""

    container_id: str
    process: asyncio.subprocess.Process
    state_dir: Path
    log: Path
    started_at: datetime
    identity: Mapping[str, Any] = field(default_factory=dict)
    """The state file's fixed keys: node, namespace, pod, podUID, container, ..."""
    finished_at: datetime | None = None
    _exit: int | None = field(default=None)

    @property
    def state_file(self) -> Path:
        return state_path(self.log)

    def state(self, *, exit_code: int | None = None, reason: str = "") -> dict[str, Any]:
        doc: dict[str, Any] = {key: None for key in STATE_FIELDS}
        doc.update(self.identity)
        doc.update(
            containerID=self.container_id,
            startedAt=precise_timestamp(self.started_at),
            finishedAt=precise_timestamp(self.finished_at) if self.finished_at else None,
            exitCode=exit_code if self.finished_at else None,
            reason=(reason or None) if self.finished_at else None,
        )
        return doc

    def record(self, *, exit_code: int | None = None, reason: str = "") -> None:
        """(Re)write the state file; a failure is logged, never raised (the log
        directory may be gone with its pod)."""
        try:
            write_json_atomic(self.state_file, self.state(exit_code=exit_code, reason=reason))
        except OSError as exc:
            _logger.warning("container state %s: %s", self.state_file, exc)

    def record_end(self, exit_code: int, reason: str, finished_at: datetime) -> None:
        """Record the end once (the first caller's account is kept)."""
        if self.finished_at is not None:
            return
        self.finished_at = finished_at
        self.record(exit_code=exit_code, reason=reason)

    @property
    def termination_file(self) -> Path:
        return termination_file(self.state_dir)

    @property
    def pid1(self) -> int | None:
        """The host PID of the container's first process (for exec probes)."""
        try:
            return int((self.state_dir / "pid").read_text())
        except (OSError, ValueError):
            return None

    async def wait(self) -> int:
        """Exit code as a runtime reports it: 128+N for a process killed by signal N."""
        code = await self.process.wait()
        self._exit = 128 - code if code < 0 else code
        return self._exit

    async def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(max(grace, 0.0)):
                    return await asyncio.shield(self.wait())
            except TimeoutError:
                pass
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        return await self.wait()

    def cleanup(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)


async def start(
    spec: LaunchSpec, state_dir: Path, log: Path, identity: Mapping[str, Any] | None = None
) -> ContainerProcess:
    """Start the launcher for `spec`; its output goes to `log`, and its state file
    (with `identity`'s keys) is written next to it."""
    shutil.rmtree(state_dir, ignore_errors=True)
    (state_dir / "rootfs").mkdir(parents=True)
    message_file = termination_file(state_dir)
    message_file.touch()
    os.chmod(message_file, 0o666)  # whatever the umask: any runAsUser may write it
    spec_file = state_dir / "launch.json"
    spec_file.write_text(spec.to_json())
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": _SRC_DIR,
        PARENT_ENV: str(os.getpid()),
    }
    with open(log, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kubehoist.lab.kubelet.launcher",
            str(spec_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    container = ContainerProcess(
        container_id=new_container_id(),
        process=proc,
        state_dir=state_dir,
        log=log,
        started_at=now(),
        identity=dict(identity or {}),
    )
    container.record()
    return container


def last_log_line(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 2048))
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def read_tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of a file (OSError if it cannot be read)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - limit))
        return fh.read(limit)


def read_termination_file(path: Path) -> tuple[bytes | None, str]:
    """A termination message file's last MAX_CONTAINER_MESSAGE_BYTES bytes (None if
    the file is missing), or why it could not be read."""
    try:
        return read_tail(path, MAX_CONTAINER_MESSAGE_BYTES), ""
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"Error on reading termination log {path}: {exc}"


def read_log_tail(log: Path) -> tuple[bytes, str]:
    """Enough of a log's end for `status.log_message`, or why it could not be read."""
    try:
        return read_tail(log, MAX_LOG_MESSAGE_BYTES + 1), ""
    except OSError as exc:
        return b"", f"Error on reading termination message from logs: {exc}"
