"""kubeadm makes the lab's PKI, kubeconfigs and static pod manifests, exactly as on a
kubeadm cluster, inside each node's root directory.

kubeadm runs with `--rootfs <node-root>` (it chroots there; it is a static binary), so
every path it writes and every path in the manifests it writes is the real
`/etc/kubernetes/...`, as on a real control-plane node. Control planes after the first
get the shared cluster CA copied in first, as `kubeadm join --control-plane` expects
of an operator who copies certificates by hand.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from kubehoist.errors import KubehoistError
from kubehoist.lab.binaries import Binaries
from kubehoist.lab.spec import API_PORT, SERVICE_CIDR, LabNode, LabSpec

CLUSTER_NAME = "kubehoist-lab"
CONFIG_IN_NODE = "/etc/kubernetes/kubeadm-config.yaml"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"

# Files of the cluster CA that every control plane must share (kubeadm's list of
# certificates to copy when joining a control plane by hand).
SHARED_PKI = (
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)


KUBELET_CONFIGURATION = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "kind": "KubeletConfiguration",
    # This machine has cgroup v1 only; kubelet 1.36 refuses it unless told otherwise.
    "failCgroupV1": False,
    "cgroupDriver": "cgroupfs",  # no systemd in the lab
    "failSwapOn": False,
    # How often the kubelet computes its node status (default 10 s), hence when it first
    # registers its Node: the CSI plugin's start-up gives up on a Node that is not there
    # ~23 s after start, and a kubelet registering at +20 s (a loaded 2-core machine
    # booting five nodes) then stays NotReady. Node heartbeats are Leases either way.
    "nodeStatusUpdateFrequency": "4s",
    # Images come from archives imported at boot (no registry): never collect them.
    "imageGCHighThresholdPercent": 100,
    "imageGCLowThresholdPercent": 99,
    # Several nodes share one disk and one memory: evict only when really short.
    "evictionHard": {
        "memory.available": "100Mi",
        "nodefs.available": "1%",
        "imagefs.available": "1%",
        "nodefs.inodesFree": "1%",
    },
}
"""The cluster's KubeletConfiguration (kubeadm writes it to /var/lib/kubelet/config.yaml)."""


def config_for(spec: LabSpec, node: LabNode) -> str:
    """The kubeadm configuration (InitConfiguration + ClusterConfiguration) of a node."""
    sans = ["127.0.0.1", "localhost", spec.lan_gateway] + [n.ip for n in spec.control_planes]
    init = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": API_PORT},
        "nodeRegistration": {
            "name": node.name,
            "criSocket": CRI_SOCKET,
            # Lab nodes share one machine's cgroup tree: each kubelet keeps to its own.
            "kubeletExtraArgs": [
                {"name": "cgroup-root", "value": f"/kubehoist-{spec.lab_id}/{node.name}"}
            ],
            "ignorePreflightErrors": ["all"],
            "taints": (
                [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
                if node.control_plane
                else []
            ),
        },
    }
    cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": CLUSTER_NAME,
        "kubernetesVersion": spec.kubernetes_version,
        "controlPlaneEndpoint": spec.control_plane_endpoint,
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {
            # No podSubnet: kube-controller-manager then allocates no node CIDRs. The
            # lab's pod network is statically routed, each node's range fixed by the
            # lab's plan (node.pod_cidr, in its CNI configuration), as a host-gw
            # network with per-node ranges is; allocation order would not match it.
            "serviceSubnet": str(SERVICE_CIDR),
            "dnsDomain": "cluster.local",
        },
        "apiServer": {"certSANs": sans},
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
    }
    return yaml.safe_dump_all([init, cluster, KUBELET_CONFIGURATION], sort_keys=False)


def run(
    binaries: Binaries,
    node_root: Path,
    *args: str,
    netns: str | None = None,
    timeout: float = 120,
) -> str:
    """Run `kubeadm --rootfs node_root ARGS` (inside `netns` when it talks to the API)."""
    cmd = [str(binaries.path("kubeadm")), "--rootfs", str(node_root), *args]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KubehoistError(f"kubeadm {' '.join(args)}: timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KubehoistError(f"kubeadm {' '.join(args)} on {node_root.name}: {last}")
    return proc.stdout


def _prepare_root(node_root: Path) -> None:
    for sub in ("etc/kubernetes/manifests", "etc/kubernetes/pki", "var/lib/etcd", "tmp"):
        (node_root / sub).mkdir(parents=True, exist_ok=True)


def generate(spec: LabSpec, binaries: Binaries) -> None:
    """Make every node's kubeadm files. Safe to repeat: kubeadm keeps what exists."""
    for node in spec.nodes:
        root = node.root(spec.root)
        _prepare_root(root)
        (root / CONFIG_IN_NODE.lstrip("/")).write_text(config_for(spec, node))
        if node.control_plane:
            _control_plane_files(spec, binaries, node)
    for node in spec.nodes:
        root = node.root(spec.root)
        # kubelet-start writes /var/lib/kubelet/{config.yaml,kubeadm-flags.env}; starting
        # the kubelet (systemd's part) is the node's init (node.py). On a worker it runs
        # before the worker has a CA certificate (kubeadm would take it for an external CA).
        run(binaries, root, "init", "phase", "kubelet-start", "--config", CONFIG_IN_NODE)
    for node in spec.workers:
        _worker_kubelet_conf(spec, binaries, node)


def _control_plane_files(spec: LabSpec, binaries: Binaries, node: LabNode) -> None:
    first = spec.api_node
    root = node.root(spec.root)
    if node is not first:
        _copy_shared_pki(spec, node)
    cfg = ["--config", CONFIG_IN_NODE]
    run(binaries, root, "init", "phase", "certs", "all", *cfg)
    run(binaries, root, "init", "phase", "kubeconfig", "all", *cfg)
    run(binaries, root, "init", "phase", "control-plane", "all", *cfg)
    if node is first:
        run(binaries, root, "init", "phase", "etcd", "local", *cfg)
        _save_shared_pki(spec, node)


def _save_shared_pki(spec: LabSpec, node: LabNode) -> None:
    src = node.root(spec.root) / "etc/kubernetes/pki"
    for rel in SHARED_PKI:
        dst = spec.pki_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst)


def _copy_shared_pki(spec: LabSpec, node: LabNode) -> None:
    dst_root = node.root(spec.root) / "etc/kubernetes/pki"
    for rel in SHARED_PKI:
        dst = dst_root / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(spec.pki_dir / rel, dst)


def _worker_kubelet_conf(spec: LabSpec, binaries: Binaries, node: LabNode) -> None:
    """A worker's kubelet.conf (identity system:node:<name>), made on the first control
    plane as an operator would with `kubeadm kubeconfig user`, then moved to the worker."""
    target = node.root(spec.root) / "etc/kubernetes/kubelet.conf"
    # The kubelet trusts clients signed by the cluster CA (kubeadm join writes it).
    ca = node.root(spec.root) / "etc/kubernetes/pki/ca.crt"
    ca.parent.mkdir(parents=True, exist_ok=True)
    if not ca.exists():
        shutil.copy2(spec.pki_dir / "ca.crt", ca)
    if target.exists():
        return
    first_root = spec.api_node.root(spec.root)
    out_dir = first_root / "tmp" / f"kubelet-{node.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_rel = f"/tmp/kubelet-{node.name}/kubeadm-config.yaml"
    (first_root / cfg_rel.lstrip("/")).write_text(config_for(spec, node))
    run(
        binaries,
        first_root,
        "init", "phase", "kubeconfig", "kubelet",
        "--config", cfg_rel,
        "--kubeconfig-dir", f"/tmp/kubelet-{node.name}",
    )  # fmt: skip
    # A joined worker reaches the API servers through the control-plane endpoint.
    conf = yaml.safe_load((out_dir / "kubelet.conf").read_text())
    for cluster in conf.get("clusters", []):
        cluster["cluster"]["server"] = f"https://{spec.control_plane_endpoint}"
    target.write_text(yaml.safe_dump(conf, sort_keys=False))
    target.chmod(0o600)
    shutil.rmtree(out_dir, ignore_errors=True)


def upload_config(spec: LabSpec, binaries: Binaries) -> None:
    """The cluster-wide kubeadm phases that need the API server: upload the cluster's
    and the kubelet's configuration (`kubeadm-config`, `kubelet-config`; kubeadm also
    binds `kubeadm:cluster-admins`, admin.conf's group, to cluster-admin), and
    bootstrap-token (the cluster-info ConfigMap and the RBAC rules of joining nodes and
    of the API server's kubelet client, which `kubectl logs` and `exec` need)."""
    first = spec.api_node
    for phase in (
        ("upload-config", "kubeadm"),
        ("upload-config", "kubelet"),
        ("bootstrap-token",),
    ):
        run(
            binaries,
            first.root(spec.root),
            "init", "phase", *phase, "--config", CONFIG_IN_NODE,
            netns=first.netns,
        )  # fmt: skip


def mark_control_planes(spec: LabSpec, binaries: Binaries) -> None:
    """Label and taint the control-plane Nodes (once their kubelets registered them)."""
    for node in spec.control_planes:
        run(
            binaries,
            node.root(spec.root),
            "init", "phase", "mark-control-plane", "--config", CONFIG_IN_NODE,
            netns=node.netns,
        )  # fmt: skip
