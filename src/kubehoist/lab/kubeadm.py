"""kubeadm makes the lab's cluster as on real machines: `kubeadm init` on the first
control plane, `kubeadm join --control-plane` on the others, `kubeadm join` on the
workers, each run inside the node (its mount, UTS and network namespaces), so every
path kubeadm reads and writes is its default one (`/etc/kubernetes`, `/var/lib/kubelet`,
`/var/lib/etcd`) and every address it finds is the node's.

What kubeadm cannot do here is left out explicitly, each with its reason:

* its kubelet-start phase asks systemd to (re)start the kubelet: the node's init stands
  for systemd and the node's `systemctl` is the lab's shim (systemctl.py);
* the addons (CoreDNS, kube-proxy) are disabled in the ClusterConfiguration
  (`dns.disabled`, `proxy.disabled`): the lab builds neither image, routes the
  `kubernetes` Service itself and has no DNS (docs/lab.md); disabled there, `kubeadm
  upgrade` leaves them out as well;
* the preflight checks in `IGNORED_PREFLIGHT`, which cannot pass on a lab node.

Certificates reach the joining control planes as kubeadm's HA guide does it: `init
--upload-certs` stores them, encrypted with the lab's certificate key, in the
`kubeadm-certs` Secret, and `join --control-plane` with that key downloads them. Nothing
is copied between nodes by the lab. The bootstrap token and the certificate key are
the lab's own (made once, `<root>/kubeadm/secrets.json`); joining nodes pin the cluster
CA by its public key hash (`caCertHashes`), as `kubeadm token create
--print-join-command` prints it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubehoist.errors import KubehoistError
from kubehoist.lab import node as labnode
from kubehoist.lab.procs import die_with_parent
from kubehoist.lab.spec import API_PORT, SERVICE_CIDR, LabNode, LabSpec

CLUSTER_NAME = "kubehoist-lab"
CONFIG_IN_NODE = "/etc/kubernetes/kubeadm-config.yaml"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
KUBEADM_IN_NODE = "/usr/local/sbin/kubeadm"  # node.node_main puts it on the node's PATH
API_VERSION = "kubeadm.k8s.io/v1beta4"

IGNORED_PREFLIGHT: dict[str, str] = {
    "SystemVerification": (
        "this machine has cgroup v1 only: kubeadm's system verification fails on it for a "
        "kubelet v1.35 or newer and asks for the check to be skipped explicitly once the "
        "KubeletConfiguration sets failCgroupV1: false, as the lab's does (KEP-5573); the "
        "kernel configuration it also checks passes"
    ),
}
"""Preflight checks that cannot pass on a lab node, each with why (docs/lab.md)."""

_NO_COREDNS = (
    "the lab disables the DNS addon (it builds no CoreDNS image), yet `kubeadm upgrade` "
    "runs its CoreDNS migration checks unconditionally (kubeadm v1.36 "
    "phases/upgrade/preflight.go, RunCoreDNSMigrationCheck): with no CoreDNS deployed "
    "the installed version reads as '' and the check fails"
)
IGNORED_UPGRADE_PREFLIGHT: dict[str, str] = {
    **IGNORED_PREFLIGHT,
    "CoreDNSUnsupportedPlugins": _NO_COREDNS,
    "CoreDNSMigration": _NO_COREDNS,
}
"""The same for `kubeadm upgrade apply|node` (docs/lab.md)."""

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
"""The cluster's KubeletConfiguration: `kubeadm init` uploads it (kubelet-config) and
every node's kubelet-start phase writes it to /var/lib/kubelet/config.yaml."""


# --- the lab's join secrets -----------------------------------------------------------
@dataclass(frozen=True)
class JoinSecrets:
    """The bootstrap token and the certificate key of the lab (kubeadm's formats:
    `[a-z0-9]{6}.[a-z0-9]{16}` and 32 random bytes in hex)."""

    token: str
    certificate_key: str


def _secrets_path(spec: LabSpec) -> Path:
    return spec.root / "kubeadm" / "secrets.json"


def join_secrets(spec: LabSpec) -> JoinSecrets:
    """The lab's secrets, made on first use and kept for the lab's life."""
    path = _secrets_path(spec)
    try:
        data = json.loads(path.read_text())
        return JoinSecrets(data["token"], data["certificate_key"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KubehoistError(f"{path}: unreadable: {exc}") from exc
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token = "".join(secrets.choice(alphabet) for _ in range(6))
    token += "." + "".join(secrets.choice(alphabet) for _ in range(16))
    made = JoinSecrets(token, secrets.token_hex(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"token": made.token, "certificate_key": made.certificate_key}))
    tmp.chmod(0o600)
    tmp.replace(path)
    return made


def ca_cert_hash(ca_crt: Path) -> str:
    """`sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo (DER), the pin a
    joining node checks the cluster-info's CA against (kubeadm's pubkeypin)."""
    try:
        cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    except (OSError, ValueError) as exc:
        raise KubehoistError(f"{ca_crt}: not a readable CA certificate: {exc}") from exc
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


# --- configuration ----------------------------------------------------------------------
def _node_registration(spec: LabSpec, node: LabNode) -> dict[str, Any]:
    return {
        "name": node.name,
        "criSocket": CRI_SOCKET,
        # Lab nodes share one machine's cgroup tree: each kubelet keeps to its own.
        "kubeletExtraArgs": [
            {"name": "cgroup-root", "value": f"/kubehoist-{spec.lab_id}/{node.name}"}
        ],
        "ignorePreflightErrors": sorted(IGNORED_PREFLIGHT),
        "taints": (
            [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            if node.control_plane
            else []
        ),
    }


def cluster_configuration(spec: LabSpec) -> dict[str, Any]:
    sans = ["127.0.0.1", "localhost", spec.lan_gateway] + [n.ip for n in spec.control_planes]
    return {
        "apiVersion": API_VERSION,
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
        # The lab builds no CoreDNS nor kube-proxy image (see the module's docstring).
        "dns": {"disabled": True},
        "proxy": {"disabled": True},
    }


def init_config(spec: LabSpec, node: LabNode, keys: JoinSecrets) -> str:
    """`kubeadm init --config`: InitConfiguration, ClusterConfiguration and the
    cluster's KubeletConfiguration."""
    init = {
        "apiVersion": API_VERSION,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": keys.token,
                "description": "the kubehoist lab's joins",
                "ttl": "24h0m0s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
        ],
        "certificateKey": keys.certificate_key,
        "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": API_PORT},
        "nodeRegistration": _node_registration(spec, node),
    }
    docs = [init, cluster_configuration(spec), KUBELET_CONFIGURATION]
    return yaml.safe_dump_all(docs, sort_keys=False)


def join_config(spec: LabSpec, node: LabNode, keys: JoinSecrets, ca_hash: str) -> str:
    """`kubeadm join --config`: through the control-plane endpoint, the CA pinned; a
    control plane also downloads the certificates with the certificate key."""
    join: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": spec.control_plane_endpoint,
                "token": keys.token,
                "caCertHashes": [ca_hash],
            }
        },
        "nodeRegistration": _node_registration(spec, node),
    }
    if node.control_plane:
        join["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": API_PORT},
            "certificateKey": keys.certificate_key,
        }
    return yaml.safe_dump(join, sort_keys=False)


# --- running kubeadm on a node ---------------------------------------------------------
def run_in_node(spec: LabSpec, node: LabNode, *args: str, timeout: float = 600) -> str:
    """Run `kubeadm ARGS` on the node as its operator would (inside its namespaces, with
    the node's PATH); its output is appended to the node's `/var/log/kubeadm.log`."""
    try:
        enter = labnode.enter_argv(spec, node)
    except KubehoistError as exc:
        raise KubehoistError(f"kubeadm {args[0]} on {node.name}: {exc.message}") from exc
    env = {"PATH": labnode.SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    log_path = labnode.log_dir(spec, node) / "kubeadm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*enter, KUBEADM_IN_NODE, *args]
    started = time.monotonic()
    with open(log_path, "ab") as logf:
        logf.write(
            f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} kubeadm {' '.join(args)}\n".encode()
        )
        logf.flush()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.PIPE,
                env=env,
                timeout=timeout,
                check=False,
                preexec_fn=die_with_parent,
            )
        except subprocess.TimeoutExpired as exc:
            raise KubehoistError(
                f"kubeadm {args[0]} on {node.name}: timed out after {timeout:.0f}s (see {log_path})"
            ) from exc
        stderr = proc.stderr.decode(errors="replace")
        logf.write(stderr.encode())
        logf.write(f"--- exit {proc.returncode} after {time.monotonic() - started:.1f}s\n".encode())
    if proc.returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("To see the")]
        raise KubehoistError(
            f"kubeadm {args[0]} on {node.name} failed: {(lines or ['(no output)'])[-1]} "
            f"(see {log_path})"
        )
    return stderr


def _done_marker(spec: LabSpec, node: LabNode) -> Path:
    return spec.root / "kubeadm" / f"{node.name}.done"


def is_done(spec: LabSpec, node: LabNode) -> bool:
    """Whether kubeadm init/join completed on the node (once in the lab's life)."""
    return _done_marker(spec, node).exists()


def _prepare_root(spec: LabSpec, node: LabNode) -> Path:
    root = node.root(spec.root)
    for sub in ("etc/kubernetes/manifests", "var/lib/etcd"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "var/lib/etcd", 0o700)
    return root


def init(spec: LabSpec) -> None:
    """`kubeadm init` on the first control plane (booted: containerd runs, images are
    in), then keep the cluster CA's certificate at `<root>/pki/ca.crt` for the host."""
    node = spec.api_node
    root = _prepare_root(spec, node)
    keys = join_secrets(spec)
    (root / CONFIG_IN_NODE.lstrip("/")).write_text(init_config(spec, node, keys))
    run_in_node(spec, node, "init", "--config", CONFIG_IN_NODE, "--upload-certs")
    save_ca(spec)
    _done_marker(spec, node).write_text("init\n")


def save_ca(spec: LabSpec) -> None:
    """The cluster CA certificate, where the host side verifies the API servers."""
    spec.pki_dir.mkdir(parents=True, exist_ok=True)
    src = spec.api_node.root(spec.root) / "etc/kubernetes/pki/ca.crt"
    shutil.copy2(src, spec.pki_dir / "ca.crt")


def join(spec: LabSpec, node: LabNode) -> None:
    """`kubeadm join` (with `--control-plane` for a control plane) on a booted node."""
    root = _prepare_root(spec, node)
    keys = join_secrets(spec)
    ca_hash = ca_cert_hash(spec.pki_dir / "ca.crt")
    (root / CONFIG_IN_NODE.lstrip("/")).write_text(join_config(spec, node, keys, ca_hash))
    run_in_node(spec, node, "join", "--config", CONFIG_IN_NODE)
    _done_marker(spec, node).write_text("join\n")
