"""Where a lab pod's container process is: the lab kubelet keeps the host pid of each
container start in `<node-root>/var/lib/kubelet/pods/<pod>/containers/<name>/<n>/pid`
(`<pod>` is the pod's UID, or for a static pod its config hash, the value of the
mirror pod's `kubernetes.io/config.mirror` annotation). Lets the demo and the
benchmarks kill a leader the way a crash would."""

from __future__ import annotations

import os

from lightkube.resources.core_v1 import Pod

from kubehoist.errors import KubehoistError
from kubehoist.lab.spec import LabSpec


def container_pid(spec: LabSpec, pod: Pod, container: str) -> int:
    """The host pid of the running container `container` of `pod`."""
    if pod.metadata is None or pod.spec is None or not pod.spec.nodeName:
        raise KubehoistError("pod is not bound to a node")
    annotations = pod.metadata.annotations or {}
    pod_dir = annotations.get("kubernetes.io/config.mirror") or pod.metadata.uid
    node = spec.node(pod.spec.nodeName)
    runs_dir = (
        node.root(spec.root) / "var/lib/kubelet/pods" / str(pod_dir) / "containers" / container
    )
    try:
        runs = sorted(runs_dir.iterdir(), key=lambda p: int(p.name))
        pid = int((runs[-1] / "pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError) as exc:
        raise KubehoistError(
            f"pod {pod.metadata.name}: no running container {container} ({exc})"
        ) from None
    return pid


def kill_container(spec: LabSpec, pod: Pod, container: str, signal_number: int) -> int:
    pid = container_pid(spec, pod, container)
    os.kill(pid, signal_number)
    return pid
