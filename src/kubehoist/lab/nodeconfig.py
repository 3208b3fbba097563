"""A lab node's layout and configuration files: the paths that are the node's own
(`NODE_DIRS`, bound from its root directory), containerd's socket inside it, and what
the host writes before the node boots (`write_config`): containerd's config.toml, the
pod network's CNI configuration and the binaries its init runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kubehoist.lab.spec import LabNode, LabSpec

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
"""containerd's socket as seen inside the node (the kubelet's and crictl's endpoint)."""

NODE_DIRS = (
    "/etc/kubernetes",
    "/etc/containerd",
    "/etc/cni/net.d",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/etcd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
)
"""Paths that are the node's own (bound from its root directory); the rest is the host's."""


# --- the node's configuration files (written from the host before boot) ----------------
@dataclass(frozen=True)
class NodeConfig:
    containerd_bin_dir: Path
    kubelet: Path
    containerd: Path
    ctr: Path
    crictl: Path
    kubeadm: Path | None = None  # on the node's PATH, as the kubeadm package installs it
    runc: Path = Path("/usr/sbin/runc")
    cni_bin_dir: Path = Path("/usr/lib/cni")
    pause_image: str = "registry.k8s.io/pause:3.10.2"


def containerd_config(cfg: NodeConfig) -> str:
    """containerd's config.toml (version 3) for a lab node."""
    return f"""\
# Written by the kubehoist lab. containerd 2.x, CRI for the kubelet, runc with cgroupfs.
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.cri.v1.runtime"]
  # This machine has no CAP_SYS_RESOURCE: a sandbox may not lower its oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{cfg.runc}"
        SystemdCgroup = false

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cfg.cni_bin_dir}"]
    conf_dir = "/etc/cni/net.d"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{cfg.pause_image}"
"""


def cni_config(node: LabNode) -> str:
    """The node's pod network: a bridge with addresses from its podCIDR (host-local)."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "kubehoist",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def write_config(spec: LabSpec, node: LabNode, cfg: NodeConfig) -> None:
    root = node.root(spec.root)
    for d in NODE_DIRS:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "etc/containerd/config.toml").write_text(containerd_config(cfg))
    (root / "etc/cni/net.d/10-kubehoist.conflist").write_text(cni_config(node))
    (spec.run_dir / f"node-{node.name}.json").write_text(
        json.dumps(
            {
                "containerd_bin_dir": str(cfg.containerd_bin_dir),
                "kubelet": str(cfg.kubelet),
                "containerd": str(cfg.containerd),
                "ctr": str(cfg.ctr),
                "crictl": str(cfg.crictl),
                "kubeadm": str(cfg.kubeadm) if cfg.kubeadm else "",
            }
        )
        + "\n"
    )
