"""`lab install`: another Kubernetes version's packages on a running lab node, as an
operator installs them before `kubeadm upgrade` (`apt-get install kubeadm=1.36.3-*`,
later `kubelet=…`), on an air-gapped machine whose images are loaded by hand.

On a lab node kubeadm's packages are files bound onto `/usr/local/sbin` (node.py); an
install binds the version's `kubeadm` and `kubelet` there, imports the version's
control-plane images (kubeadm's names for them, `kubeadm config images list`) into
the node's containerd, and records the choice on the node's disk
(`/var/lib/kubehoist-lab/packages.json`) so that the node boots with it again. The
running kubelet is not restarted: as after a package upgrade, `systemctl restart
kubelet` (the node's shim) starts the new one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightkube.resources.core_v1 import Node

from kubehoist.errors import KubehoistError
from kubehoist.lab import binaries as binmod
from kubehoist.lab import images
from kubehoist.lab import node as labnode
from kubehoist.lab.spec import LabNode, LabSpec

PACKAGES = ("kubeadm", "kubelet")
PACKAGES_FILE = "var/lib/kubehoist-lab/packages.json"
"""On the node's disk (its root directory): program -> host path of its binary."""


def packages_path(spec: LabSpec, node: LabNode) -> Path:
    return node.root(spec.root) / PACKAGES_FILE


def installed(spec: LabSpec, node: LabNode) -> dict[str, str]:
    """What `lab install` put on this node (program -> binary), {} when nothing."""
    programs = _record(spec, node).get("programs", {})
    if not isinstance(programs, dict):
        raise KubehoistError(f"{packages_path(spec, node)}: programs is not a mapping")
    return {str(k): str(v) for k, v in programs.items() if k in PACKAGES}


def _record(spec: LabSpec, node: LabNode) -> dict[str, Any]:
    path = packages_path(spec, node)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise KubehoistError(f"{path}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else {}


def _save(spec: LabSpec, node: LabNode, data: dict[str, Any]) -> None:
    path = packages_path(spec, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def import_images(spec: LabSpec, node: LabNode, version: str) -> str:
    """The version's images (kubeadm's names: control plane, etcd, pause) into the
    node's containerd, once per version (recorded on the node's disk)."""
    binmod.check_supported(version)
    data = _record(spec, node)
    if version in data.get("images", []):
        return f"node {node.name}: the images of {version} are in already"
    bins = binmod.ensure(version, spec.etcd_version)
    names = images.kubeadm_images(bins, version)
    recipes = [
        *(images.binary_image(names[p], bins.path(p), p) for p in images.KUBE_IMAGE_PROGRAMS),
        images.pause_image(names["pause"]),
    ]
    images.import_archives(
        labnode.enter_argv(spec, node), bins.path("ctr"), [r.ensure() for r in recipes]
    )
    data["images"] = sorted({*data.get("images", []), version})
    _save(spec, node, data)
    return f"node {node.name}: the images of {version} imported"


def install(spec: LabSpec, node: LabNode, version: str, *, images_too: bool = True) -> str:
    """Install `version`'s kubeadm and kubelet (and its images) on a running node."""
    binmod.check_supported(version)
    bins = binmod.ensure(version, spec.etcd_version)
    enter = labnode.enter_argv(spec, node)
    if images_too:
        import_images(spec, node, version)
    programs = {p: str(bins.path(p)) for p in PACKAGES}
    _save(spec, node, {**_record(spec, node), "version": version, "programs": programs})
    for program, binary in programs.items():
        target = f"/usr/local/sbin/{program}"
        # A fresh bind on top: the node sees the new file at once, as after a package
        # upgrade (a process already running keeps its old binary).
        cmd = [*enter, "mount", "--bind", binary, target]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise KubehoistError(
                f"node {node.name}: cannot install {program} {version}: {proc.stderr.strip()}"
            )
    out = subprocess.run(
        [*enter, "/usr/local/sbin/kubeadm", "version", "-o", "short"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if out.stdout.strip() != version:
        raise KubehoistError(
            f"node {node.name}: kubeadm says {out.stdout.strip() or out.stderr.strip()!r} "
            f"after installing {version}"
        )
    return f"node {node.name}: kubeadm and kubelet {version} installed" + (
        ", its images imported" if images_too else ""
    )


def restart_kubelet(spec: LabSpec, node: LabNode) -> None:
    """`systemctl restart kubelet` on the node (its init restarts the kubelet, which
    then runs the binary installed last)."""
    cmd = [*labnode.enter_argv(spec, node), "/usr/local/sbin/systemctl", "restart", "kubelet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise KubehoistError(
            f"node {node.name}: systemctl restart kubelet failed: {proc.stderr.strip()}"
        )


STEADY_S = 5.0
"""How long a restarted control plane's API server must answer /readyz without a break
before the next node: longer than twice the load balancer's health-check period
(forward.Balancer.check_every), so the balancer has seen it ready too."""


def kubelet_back(node: Node, version: str, since: datetime.datetime) -> bool:
    """Whether a Node object shows the kubelet of `version` posting Ready since `since`
    (a condition's heartbeat is in whole seconds: `since` should be too)."""
    info = node.status.nodeInfo if node.status else None
    if info is None or info.kubeletVersion != version:
        return False
    return any(
        c.type == "Ready"
        and c.status == "True"
        and c.lastHeartbeatTime is not None
        and c.lastHeartbeatTime >= since
        for c in ((node.status.conditions if node.status else None) or [])
    )


@dataclasses.dataclass
class Steady:
    """Whether a check has passed without a break for `needed` seconds."""

    needed: float
    since: float | None = None

    def passed(self, ok: bool, now: float) -> bool:
        if not ok:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.needed


def wait_back_in_service(spec: LabSpec, node: LabNode, version: str, *, timeout: float) -> None:
    """Wait until a node whose kubelet was just restarted is back, as an operator checks
    before the next node: its Node object shows the new kubelet version posting Ready,
    and on a control plane its API server answers /readyz (the cluster CA verified)
    without a break for STEADY_S. An API server that listens but is not ready yet
    (its authorizer's caches still filling) may answer even an administrator 403, and
    the balancer stops sending it connections only once a health check has seen that."""
    from lightkube import Client, KubeConfig

    from kubehoist.lab import faults

    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    deadline = time.monotonic() + timeout
    client = Client(KubeConfig.from_file(str(spec.admin_kubeconfig)), trust_env=False)
    steady = Steady(STEADY_S)
    want = f"Node Ready at kubelet {version}"
    if node.control_plane:
        want += f", kube-apiserver /readyz 200 for {STEADY_S:.0f}s"
    while time.monotonic() <= deadline:
        try:
            back = kubelet_back(client.get(Node, node.name), version, since)
        except Exception:  # an API server restarting: ask again
            back = False
        if node.control_plane:
            back = steady.passed(back and faults.apiserver_ready(spec, node), time.monotonic())
        if back:
            return
        time.sleep(0.5)
    raise KubehoistError(
        f"node {node.name}: not back in service {timeout:.0f}s after its kubelet restarted ({want})"
    )


def upgrade_cluster(
    spec: LabSpec,
    version: str,
    *,
    line: Callable[[str], None],
    nodes: Sequence[str] | None = None,
    timeout: float = 900,
) -> dict[str, float]:
    """kubeadm's documented upgrade, node by node: the first control plane
    `kubeadm upgrade apply VERSION`, every other control plane and then every worker
    `kubeadm upgrade node`; on each node kubeadm's package first, then the kubelet's
    (installed with it, restarted after kubeadm). `nodes` limits the run to those (in
    that order; the lab's first control plane applies). Returns seconds per step."""
    from kubehoist.lab import kubeadm

    order = [n.name for n in (*spec.control_planes, *spec.workers)]
    chosen = list(nodes) if nodes else order
    unknown = [n for n in chosen if n not in order]
    if unknown:
        raise KubehoistError(f"no node {', '.join(unknown)} in the lab (nodes: {', '.join(order)})")
    took: dict[str, float] = {}
    # First the images on every node, as an air-gapped operator preloads them: kubeadm's
    # `CreateJob` check runs a pod of the new version's pause image on any node.
    for node in (*spec.control_planes, *spec.workers):
        line(import_images(spec, node, version))
    for name in chosen:
        node = spec.node(name)
        start = time.monotonic()
        line(install(spec, node, version, images_too=False))
        if node == spec.api_node:
            args = ["upgrade", "apply", version, "--yes"]
        else:
            args = ["upgrade", "node"]
        # The checks the lab skips, each for a reason (kubeadm.IGNORED_UPGRADE_PREFLIGHT).
        skipped = ",".join(kubeadm.IGNORED_UPGRADE_PREFLIGHT)
        args.append(f"--ignore-preflight-errors={skipped}")
        line(f"node {name}: kubeadm {' '.join(args)}")
        kubeadm.run_in_node(spec, node, *args, timeout=timeout)
        restart_kubelet(spec, node)
        wait_back_in_service(spec, node, version, timeout=timeout)
        took[name] = time.monotonic() - start
        line(
            f"node {name}: upgraded to {version}, kubelet restarted, back in service "
            f"({took[name]:.1f}s)"
        )
    if set(chosen) == set(order):
        # The whole lab runs the version now (a later `lab up` boots it so).
        dataclasses.replace(spec, kubernetes_version=version).save()
    return took
