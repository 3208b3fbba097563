"""A running lab as other commands see it, beside its API: the supervisor's lock
(`is_running`: held for the supervisor's whole life, released by the kernel even if it
is killed) and its state file (`read_state`: its phase and the pids it runs), the
kubeconfigs it writes for the host, and the control planes' static pods as their CRI
lists them (`static_pods`, for `lab status`).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import yaml

from kubehoist.errors import KubehoistError
from kubehoist.lab.logkeeper import node_crictl
from kubehoist.lab.spec import LabNode, LabSpec

STATIC_COMPONENTS = ("etcd", "kube-apiserver")
"""The static pods `lab status` shows on every control plane."""


# --- files shared with the CLI -------------------------------------------------------
def lock_path(spec: LabSpec) -> Path:
    return spec.run_dir / "supervisor.lock"


def state_path(spec: LabSpec) -> Path:
    return spec.run_dir / "state.json"


def read_state(spec: LabSpec) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(state_path(spec).read_text())
    except (OSError, ValueError):
        return {}
    return data


def is_running(spec: LabSpec) -> bool:
    """True while a supervisor holds this lab's lock."""
    try:
        fh = open(lock_path(spec), "a")  # noqa: SIM115
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def host_kubeconfig(spec: LabSpec, source: Path, dest: Path) -> None:
    """Copy a kubeconfig with its server pointed at the host's port (the load balancer)."""
    data: Any = yaml.safe_load(source.read_text())
    for cluster in data.get("clusters", []):
        cluster["cluster"]["server"] = f"https://127.0.0.1:{spec.host_port}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(dest)


def node_kubeconfig(spec: LabSpec, node: LabNode) -> Path:
    """The host-side copy of a node's kubelet.conf (identity system:node:<name>)."""
    return spec.run_dir / f"kubelet-{node.name}.conf"


def static_pods(spec: LabSpec, crictl: Path) -> dict[str, dict[str, Any]]:
    """etcd's and kube-apiserver's containers on every control plane, from the node's
    CRI: `<component>-<node>` (the mirror pod's name) -> pid (None unless running),
    restarts (the kubelet's attempt count) and state."""
    out: dict[str, dict[str, Any]] = {}
    for node in spec.control_planes:
        run = node_crictl(spec, node, crictl, timeout=20)
        try:
            doc = json.loads(run(["ps", "-a", "-o", "json"]))
        except (KubehoistError, ValueError):
            continue
        newest: dict[str, dict[str, Any]] = {}
        for c in doc.get("containers") or []:
            name = c.get("metadata", {}).get("name", "")
            if name in STATIC_COMPONENTS and int(c.get("createdAt", 0)) >= int(
                newest.get(name, {}).get("createdAt", 0)
            ):
                newest[name] = c
        for name, c in newest.items():
            pid = None
            if c.get("state") == "CONTAINER_RUNNING":
                try:
                    pid = json.loads(run(["inspect", c["id"]])).get("info", {}).get("pid")
                except (KubehoistError, ValueError):
                    pid = None
            out[f"{name}-{node.name}"] = {
                "pid": pid,
                "restarts": c.get("metadata", {}).get("attempt", 0),
                "state": c.get("state", ""),
            }
    return out
