"""What a lab is made of: its nodes, addresses, ports and directories.

A `LabSpec` is decided once by `lab up`, written to `<root>/lab.json` and read back
by every later command and by the supervisor, so that all of them agree on names and
addresses. Pure: no I/O beside `load`/`save`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
"""The lab's default Kubernetes version."""
KUBERNETES_VERSIONS = ("v1.35.4", "v1.36.3")
"""Every version the lab builds (a consumer module each in `gomod/`), oldest first:
the newest patch of each minor version the Go module proxy serves."""
ETCD_VERSION = "v3.6.16"
CONTAINERD_VERSION = "v2.3.7"
CRICTL_VERSION = "v1.36.0"  # sigs.k8s.io/cri-tools (the proxy serves no v1.36.x above .0)

LAN_SUBNET = ipaddress.IPv4Network("172.29.0.0/24")
CLUSTER_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
API_PORT = 6443
DEFAULT_HOST_PORT = 16443
DEFAULT_ROOT = Path("/var/lib/kubehoist/lab")
FQDN_DOMAIN = "lab.kubehoist.internal"


@dataclass(frozen=True)
class LabNode:
    """One lab node: a directory standing for its `/` and a network namespace."""

    name: str
    index: int  # 1-based, control planes first
    control_plane: bool
    ip: str  # on the lab LAN, e.g. 172.29.0.11
    pod_cidr: str  # e.g. 10.244.1.0/24
    netns: str  # `ip netns` name of the node's network namespace
    veth: str  # name of the node's veth end in the LAN namespace (<= 15 chars)
    hostname: str = ""  # the OS hostname inside the node when it is not the node name

    @property
    def os_hostname(self) -> str:
        """What `hostname` says on the node (a hostNetwork pod's Lease identity)."""
        return self.hostname or self.name

    def root(self, lab_root: Path) -> Path:
        return lab_root / "nodes" / self.name

    def manifests_dir(self, lab_root: Path) -> Path:
        return self.root(lab_root) / "etc" / "kubernetes" / "manifests"


@dataclass(frozen=True)
class LabSpec:
    root: Path
    lab_id: str  # short id in every namespace and link name, from the root path
    kubernetes_version: str
    etcd_version: str
    host_port: int  # the API server reached from the host at 127.0.0.1:<host_port>
    nodes: tuple[LabNode, ...] = field(default_factory=tuple)

    # --- derived names -------------------------------------------------------
    @property
    def lan_netns(self) -> str:
        return f"kh-{self.lab_id}-lan"

    @property
    def bridge(self) -> str:
        return "khbr0"

    @property
    def lan_gateway(self) -> str:
        """The LAN address of the control-plane endpoint (a TCP load balancer)."""
        return str(LAN_SUBNET.network_address + 1)

    @property
    def control_plane_endpoint(self) -> str:
        return f"{self.lan_gateway}:{API_PORT}"

    @property
    def control_planes(self) -> tuple[LabNode, ...]:
        return tuple(n for n in self.nodes if n.control_plane)

    @property
    def workers(self) -> tuple[LabNode, ...]:
        return tuple(n for n in self.nodes if not n.control_plane)

    @property
    def api_node(self) -> LabNode:
        """The first control plane: where `kubeadm init` made the cluster (every control
        plane runs etcd and kube-apiserver as kubeadm's static pods)."""
        return self.control_planes[0]

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.conf"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pki_dir(self) -> Path:
        """The shared cluster CA, copied onto every control-plane node."""
        return self.root / "pki"

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # --- persistence ---------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data["root"] = str(self.root)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabSpec:
        data = json.loads(text)
        nodes = tuple(LabNode(**n) for n in data.pop("nodes"))
        return cls(root=Path(data.pop("root")), nodes=nodes, **data)

    @classmethod
    def load(cls, root: Path) -> LabSpec:
        return cls.from_json((root / "lab.json").read_text())

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "lab.json.tmp"
        tmp.write_text(self.to_json())
        tmp.replace(self.root / "lab.json")


def lab_id_for(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:4]


def plan(
    root: Path,
    *,
    control_planes: int = 1,
    workers: int = 2,
    host_port: int = DEFAULT_HOST_PORT,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> LabSpec:
    """Decide names and addresses for a new lab."""
    if not 1 <= control_planes <= 9:
        raise ValueError("--control-planes must be between 1 and 9")
    if not 0 <= workers <= 50:
        raise ValueError("--workers must be between 0 and 50")
    if kubernetes_version not in KUBERNETES_VERSIONS:
        raise ValueError(
            f"--kubernetes-version {kubernetes_version}: not a version the lab builds "
            f"(supported: {', '.join(KUBERNETES_VERSIONS)})"
        )
    lab_id = lab_id_for(root)
    nodes: list[LabNode] = []
    names = [f"cp-{i}" for i in range(1, control_planes + 1)]
    names += [f"worker-{i}" for i in range(1, workers + 1)]
    for index, name in enumerate(names, start=1):
        subnets = list(CLUSTER_CIDR.subnets(new_prefix=24))
        nodes.append(
            LabNode(
                name=name,
                index=index,
                control_plane=name.startswith("cp-"),
                ip=str(LAN_SUBNET.network_address + 10 + index),
                pod_cidr=str(subnets[index]),
                netns=f"kh-{lab_id}-{name}",
                veth=f"kh{lab_id}n{index}",
                # One machine of an HA lab has an FQDN hostname, as many real ones do:
                # its Node name (kubeadm's nodeRegistration.name) is still the short one.
                hostname=f"{name}.{FQDN_DOMAIN}" if name == "cp-2" else "",
            )
        )
    return LabSpec(
        root=root.resolve(),
        lab_id=lab_id,
        kubernetes_version=kubernetes_version,
        etcd_version=ETCD_VERSION,
        host_port=host_port,
        nodes=tuple(nodes),
    )
