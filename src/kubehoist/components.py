"""What differs between kube-controller-manager and kube-scheduler, in one place.

Everything component-specific that render, pivot, status and guard need lives here:
the Lease, the ports, the health endpoints, which flags carry files and of what kind,
which flags need the cluster CA's private key, and which flags are booleans (so that
"--flag value" can be told apart from a bool flag followed by a positional token).
The rest of kubehoist asks a `Component` rather than comparing names.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from kubehoist import flagtable


class FileRole(enum.Enum):
    """What a flag's file is, which decides how render checks and carries it."""

    CERT = "certificate"
    """PEM certificate(s): parsed and checked for expiry."""
    KEY = "private key"
    """A PEM private key: parsed, never printed."""
    KUBECONFIG = "kubeconfig"
    """Parsed, its own file references carried too, its server rewritten."""
    COMPONENT_CONFIG = "component config"
    """A component config file (kube-scheduler --config) naming a kubeconfig."""
    SNI_CERT_KEY = "sni cert/key pair"
    """"cert,key[:domains]" as --tls-sni-cert-key takes it."""
    OPAQUE = "file"
    """Carried byte for byte (a cloud config, a leader-migration config)."""
    FOUND = "file found by its path"
    """Named by a flag (or a component config field) render has no table entry for,
    on a hostPath volume: once read it is checked as what its bytes show it to be
    (certificate, private key, kubeconfig) or carried byte for byte."""


class PathKind(enum.Enum):
    """Paths a flag names that are not credentials to carry."""

    OUTPUT_FILE = "output file"
    """The process writes it: its directory becomes a writable emptyDir."""
    OUTPUT_DIR = "output directory"
    """The process writes into it: it becomes a writable emptyDir."""
    HOST_DIR = "host directory"
    """Read from the node (flex volume plugins): not available off the node."""


FlagKind: TypeAlias = Literal["bool", "value", "unknown"]


@dataclass(frozen=True, kw_only=True)
class Probes:
    """HTTP paths of the component's health endpoints."""

    liveness: str
    readiness: str
    startup: str


@dataclass(frozen=True, kw_only=True)
class Component:
    """One control-plane component kubehoist can move into a Deployment."""

    name: str
    """Component and container name, also the Deployment's name."""
    binary_names: frozenset[str]
    """Basenames of the executable in a container command."""
    hyperkube_names: frozenset[str]
    """Subcommand names after a `hyperkube` executable."""
    lease_namespace: str
    lease_name: str
    secure_port: int
    """The component's default --secure-port (what the static pod uses)."""
    deployment_port: int
    """kubehoist's default --secure-port for the Deployment: never the static pod's."""
    probes: Probes
    files: Mapping[str, FileRole]
    """Flags (without dashes) whose value names a file to carry into the pod."""
    paths: Mapping[str, PathKind]
    """Flags whose value names a path that is not a credential."""
    signing_key_flags: frozenset[str]
    """Flags that carry the cluster CA's private key (ca.key)."""
    bool_flags: frozenset[str]
    """Boolean flags: never take the next token as their value (`kubehoist.flagtable`)."""
    value_flags: frozenset[str]
    """The component's other flags: each takes the next token as its value."""
    config_flag: str | None = None
    """A component-config flag whose file names the kubeconfig (kube-scheduler --config)."""
    config_kubeconfig_field: tuple[str, ...] = ()
    config_kind: str | None = None
    """`kind` of that file (its apiVersion's group is `config_group`)."""
    config_group: str | None = None
    leader_elect_flag: str = "leader-elect"
    lease_duration_flag: str = "leader-elect-lease-duration"
    renew_deadline_flag: str = "leader-elect-renew-deadline"
    retry_period_flag: str = "leader-elect-retry-period"
    lease_name_flag: str = "leader-elect-resource-name"
    lease_namespace_flag: str = "leader-elect-resource-namespace"
    releases_lease_on_exit: bool
    """Whether SIGTERM releases the Lease in every version (kube-scheduler: client-go's
    ReleaseOnCancel is always on); otherwise only with `release_gate` on, where it exists."""
    release_gate: str | None = None
    """The feature gate that makes SIGTERM release the Lease (kubehoist.render.releasegate)."""
    release_gate_since: tuple[int, int] | None = None
    """The first (major, minor) that has `release_gate`."""
    master_flag: str = "master"
    """Overrides the kubeconfig's server when set."""
    owned_flags: frozenset[str] = field(
        default=frozenset({"bind-address", "secure-port", "leader-elect"})
    )
    """Flags render sets itself; everything else is the user's."""

    def lease(self, flags: Mapping[str, str]) -> tuple[str, str]:
        """(namespace, name) of the Lease, honouring --leader-elect-resource-* overrides."""
        return (
            flags.get(self.lease_namespace_flag) or self.lease_namespace,
            flags.get(self.lease_name_flag) or self.lease_name,
        )

    def flag_kind(self, name: str) -> FlagKind:
        """ "bool", "value", or "unknown" (a flag not in the tables of `flagtable`)."""
        key = flagtable.normalize(name)
        if key in self.bool_flags:
            return "bool"
        if key in self.value_flags:
            return "value"
        return "unknown"

    def is_binary(self, token: str) -> bool:
        return posixpath.basename(token) in self.binary_names


_SERVING_FILES: Final = {
    "kubeconfig": FileRole.KUBECONFIG,
    "authentication-kubeconfig": FileRole.KUBECONFIG,
    "authorization-kubeconfig": FileRole.KUBECONFIG,
    "client-ca-file": FileRole.CERT,
    "requestheader-client-ca-file": FileRole.CERT,
    "tls-cert-file": FileRole.CERT,
    "tls-private-key-file": FileRole.KEY,
    "tls-sni-cert-key": FileRole.SNI_CERT_KEY,
}
_SERVING_PATHS: Final = {
    "cert-dir": PathKind.OUTPUT_DIR,
    "log-dir": PathKind.OUTPUT_DIR,
    "log-file": PathKind.OUTPUT_FILE,
}

_SIGNERS: Final = ("kubelet-serving", "kubelet-client", "kube-apiserver-client", "legacy-unknown")
_KCM_SIGNING_KEYS: Final = frozenset(
    {"cluster-signing-key-file"} | {f"cluster-signing-{s}-key-file" for s in _SIGNERS}
)
_KCM_SIGNING_CERTS: Final = frozenset(
    {"cluster-signing-cert-file"} | {f"cluster-signing-{s}-cert-file" for s in _SIGNERS}
)

KUBE_CONTROLLER_MANAGER: Final = Component(
    name="kube-controller-manager",
    binary_names=frozenset({"kube-controller-manager"}),
    hyperkube_names=frozenset({"controller-manager", "kube-controller-manager"}),
    lease_namespace="kube-system",
    lease_name="kube-controller-manager",
    secure_port=10257,
    deployment_port=10357,
    probes=Probes(liveness="/healthz", readiness="/healthz", startup="/healthz"),
    files=MappingProxyType(
        {
            **_SERVING_FILES,
            "root-ca-file": FileRole.CERT,
            "service-account-private-key-file": FileRole.KEY,
            **dict.fromkeys(sorted(_KCM_SIGNING_CERTS), FileRole.CERT),
            **dict.fromkeys(sorted(_KCM_SIGNING_KEYS), FileRole.KEY),
            "cloud-config": FileRole.OPAQUE,
            "leader-migration-config": FileRole.OPAQUE,
            "pv-recycler-pod-template-filepath-nfs": FileRole.OPAQUE,
            "pv-recycler-pod-template-filepath-hostpath": FileRole.OPAQUE,
        }
    ),
    paths=MappingProxyType({**_SERVING_PATHS, "flex-volume-plugin-dir": PathKind.HOST_DIR}),
    signing_key_flags=_KCM_SIGNING_KEYS,
    bool_flags=flagtable.KCM_BOOLS,
    value_flags=flagtable.KCM_VALUES,
    releases_lease_on_exit=False,
    # k8s.io/controller-manager pkg/features: alpha from 1.36, default false. On, the
    # process cancels its context on SIGTERM and client-go releases the Lease
    # (LeaderElectionConfig.ReleaseOnCancel) before exiting.
    release_gate="ControllerManagerReleaseLeaderElectionLockOnExit",
    release_gate_since=(1, 36),
)

KUBE_SCHEDULER: Final = Component(
    name="kube-scheduler",
    binary_names=frozenset({"kube-scheduler"}),
    hyperkube_names=frozenset({"scheduler", "kube-scheduler"}),
    lease_namespace="kube-system",
    lease_name="kube-scheduler",
    secure_port=10259,
    deployment_port=10359,
    probes=Probes(liveness="/livez", readiness="/readyz", startup="/livez"),
    files=MappingProxyType({**_SERVING_FILES, "config": FileRole.COMPONENT_CONFIG}),
    paths=MappingProxyType({**_SERVING_PATHS, "write-config-to": PathKind.OUTPUT_FILE}),
    signing_key_flags=frozenset(),
    bool_flags=flagtable.SCHEDULER_BOOLS,
    value_flags=flagtable.SCHEDULER_VALUES,
    config_flag="config",
    config_kubeconfig_field=("clientConnection", "kubeconfig"),
    config_kind="KubeSchedulerConfiguration",
    config_group="kubescheduler.config.k8s.io",
    releases_lease_on_exit=True,
)

COMPONENTS: Final[Mapping[str, Component]] = MappingProxyType(
    {c.name: c for c in (KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)}
)


def by_name(name: str) -> Component | None:
    """The component called `name`, or None."""
    return COMPONENTS.get(name)


def detect(*, container_name: str, argv: Iterable[str]) -> Component | None:
    """The component a container runs: by the first executable token, else by its name."""
    tokens = list(argv)
    for i, token in enumerate(tokens):
        if token.startswith("-"):
            continue
        for component in COMPONENTS.values():
            if component.is_binary(token):
                return component
            if (
                posixpath.basename(token) == "hyperkube"
                and i + 1 < len(tokens)
                and tokens[i + 1] in component.hyperkube_names
            ):
                return component
    return COMPONENTS.get(container_name)
