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

import json
import subprocess
from pathlib import Path

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
    path = packages_path(spec, node)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data["programs"].items() if k in PACKAGES}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KubehoistError(f"{path}: unreadable ({exc})") from None


def install(spec: LabSpec, node: LabNode, version: str, *, images_too: bool = True) -> str:
    """Install `version`'s kubeadm and kubelet (and its images) on a running node."""
    binmod.check_supported(version)
    bins = binmod.ensure(version, spec.etcd_version)
    enter = labnode.enter_argv(spec, node)
    if images_too:
        names = images.kubeadm_images(bins, version)
        recipes = [
            *(images.binary_image(names[p], bins.path(p), p) for p in images.KUBE_IMAGE_PROGRAMS),
            images.pause_image(names["pause"]),
        ]
        images.import_archives(enter, bins.path("ctr"), [r.ensure() for r in recipes])
    programs = {p: str(bins.path(p)) for p in PACKAGES}
    path = packages_path(spec, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": version, "programs": programs}, indent=2) + "\n")
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
