"""Removing what a lab node's pods left behind when their kubelet died: launcher
processes (their containers die with them), pod network namespaces and pod veths.
Container mounts need no cleanup: they only ever exist in the containers' own mount
namespaces, which the kernel drops with their last process. Container state files
left without an end are closed (`runtime.close_stale_states`). `lab down` calls
`cleanup_node` for every node; the kubelet calls it for its own node at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from kubehoist.lab.kubelet import network, runtime
from kubehoist.lab.spec import LabNode, LabSpec

LAUNCHER_MODULE = b"kubehoist.lab.kubelet.launcher"


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def launcher_pids(node_root: Path) -> list[int]:
    """PIDs of the container launchers (the kubelet's children; not a container's
    PID 1 while it is still being set up) whose spec lies under this node's root."""
    marker = (str(node_root.resolve()) + "/").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if LAUNCHER_MODULE in args and any(a.startswith(marker) for a in args):
            pids.append(int(entry))
    return [pid for pid in pids if _ppid(pid) not in pids]


async def kill_launchers(node_root: Path, *, timeout: float = 5.0) -> list[int]:
    pids = launcher_pids(node_root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while launcher_pids(node_root) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return pids


async def cleanup_node(spec: LabSpec, node: LabNode) -> list[str]:
    """Kill the node's leftover container processes and delete its pod network
    namespaces and veths. Idempotent; returns a description of what it removed."""
    removed = [f"process {pid}" for pid in await kill_launchers(node.root(spec.root))]
    # Give the kernel a moment to tear the killed containers' namespaces down.
    if removed:
        await asyncio.sleep(0.1)
    removed += await network.remove_leftovers(spec, node)
    pods = node.root(spec.root) / "var" / "log" / "pods"
    removed += [
        f"closed container state {p.relative_to(pods)}"
        for p in runtime.close_stale_states(node.root(spec.root))
    ]
    return removed
