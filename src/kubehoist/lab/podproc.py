"""Where a lab pod's container process is, so the demo, the tests and the benchmarks
can kill a leader the way a crash would.

The pod's status names the container (`containerd://<id>`); containerd's runc shim
records the container's init process in its task directory, under the node's `/run`
(`/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/init.pid`). The node's
`/run` is a tmpfs of its own mount namespace: the host reads it through
`/proc/<node init>/root`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightkube.resources.core_v1 import Pod

from kubehoist.errors import KubehoistError
from kubehoist.lab import node as labnode
from kubehoist.lab.spec import LabSpec

TASK_DIR = "run/containerd/io.containerd.runtime.v2.task/k8s.io"


def container_id(pod: Pod, container: str) -> str:
    """The runtime's id of the running container `container` of `pod` (from its status)."""
    name = pod.metadata.name if pod.metadata else "?"
    for cs in (pod.status.containerStatuses if pod.status else None) or []:
        if cs.name == container and cs.containerID and cs.state and cs.state.running:
            return cs.containerID.split("://", 1)[-1]
    raise KubehoistError(f"pod {name}: no running container {container}")


def container_pid(spec: LabSpec, pod: Pod, container: str) -> int:
    """The host pid of the running container `container` of `pod`."""
    if pod.metadata is None or pod.spec is None or not pod.spec.nodeName:
        raise KubehoistError("pod is not bound to a node")
    cid = container_id(pod, container)
    node = spec.node(pod.spec.nodeName)
    init = labnode.init_pid(spec, node)
    path = Path(f"/proc/{init}/root") / TASK_DIR / cid / "init.pid"
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError) as exc:
        raise KubehoistError(
            f"pod {pod.metadata.name}: container {container} ({cid[:12]}) has no process ({exc})"
        ) from None
    return pid


def kill_container(spec: LabSpec, pod: Pod, container: str, signal_number: int) -> int:
    pid = container_pid(spec, pod, container)
    os.kill(pid, signal_number)
    return pid
