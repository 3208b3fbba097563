"""Supervised processes: etcd and kube-apiserver of the lab, run from the commands in
kubeadm's static pod manifests, restarted when they die, logs in files.

The only rewrite is of paths: each flag value under a hostPath volume's mountPath is
pointed at the same file under the node's root directory (`/etc/kubernetes/pki/ca.crt`
-> `<node-root>/etc/kubernetes/pki/ca.crt`), since these processes run without a mount
namespace of their own. This is the one place the lab rewrites kubeadm's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubehoist.errors import KubehoistError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the supervisor dies, so a crashed
    supervisor never leaves the lab's processes behind."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class ProcSpec:
    name: str
    argv: tuple[str, ...]
    netns: str | None
    log_path: Path


def command_from_manifest(manifest: Path, node_root: Path) -> tuple[str, ...]:
    """The container command of a one-container static pod manifest, with paths under
    its hostPath mounts moved under `node_root`."""
    try:
        pod: Any = yaml.safe_load(manifest.read_text())
        container = pod["spec"]["containers"][0]
        argv = [*container.get("command", []), *container.get("args", [])]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts: list[tuple[str, str]] = []
        for m in container.get("volumeMounts", []):
            vol = volumes.get(m["name"], {})
            if "hostPath" in vol:
                mounts.append((m["mountPath"].rstrip("/"), vol["hostPath"]["path"].rstrip("/")))
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise KubehoistError(f"{manifest}: cannot read the container command: {exc}") from exc
    mounts.sort(key=lambda m: len(m[0]), reverse=True)

    def remap(value: str) -> str:
        for mount_path, host_path in mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(node_root) + host_path + value[len(mount_path) :]
        return value

    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={remap(value)}")
        else:
            out.append(remap(arg))
    return tuple(out)


class Supervised:
    """Runs one process, restarting it with back-off until `stop()`."""

    def __init__(self, spec: ProcSpec, binary: Path) -> None:
        self.spec = spec
        self.binary = binary
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"supervise-{self.spec.name}")

    async def _spawn(self) -> asyncio.subprocess.Process:
        argv = [str(self.binary), *self.spec.argv[1:]]
        if self.spec.netns:
            argv = ["ip", "netns", "exec", self.spec.netns, *argv]
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.spec.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            logf.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            logf.flush()
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                preexec_fn=die_with_parent,
            )
        finally:
            logf.close()

    async def _loop(self) -> None:
        backoff = 1.0
        while not self._stopping:
            self.proc = await self._spawn()
            self.started_at = time.monotonic()
            code = await self.proc.wait()
            if self.stopping:
                return
            ran = time.monotonic() - self.started_at
            log.warning("%s exited with %s after %.1fs; restarting", self.spec.name, code, ran)
            self.restarts += 1
            backoff = 1.0 if ran > 30 else min(backoff * 2, 10.0)
            await asyncio.sleep(backoff)

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
