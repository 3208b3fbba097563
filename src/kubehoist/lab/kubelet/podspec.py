"""The part of a Pod the lab kubelet acts on, as frozen dataclasses.

Both sources of pods (static manifests read from disk and Pods read from the API
server) are plain dicts in the API's JSON shape; `parse_pod` turns one into a
`PodSpec` once, so the rest of the kubelet never looks into untyped dicts. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
HASH_ANNOTATION = "kubernetes.io/config.hash"
SOURCE_ANNOTATION = "kubernetes.io/config.source"
SEEN_ANNOTATION = "kubernetes.io/config.seen"

DEFAULT_GRACE_SECONDS = 30
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")


class PodSpecError(ValueError):
    """A pod this kubelet cannot run as written (reported in the pod's status)."""


@dataclass(frozen=True)
class Probe:
    kind: str  # "http", "tcp", "exec" or "grpc"
    port: int | str = 0
    path: str = "/"
    scheme: str = "HTTP"
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class KeyRef:
    """A key of a Secret or ConfigMap (`valueFrom.secretKeyRef` and friends)."""

    kind: str  # "secret" or "configMap"
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field_path: str | None = None  # downward API `fieldRef.fieldPath`
    key_ref: KeyRef | None = None


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class ProjectionSource:
    """One source of a projected volume."""

    kind: str  # "secret", "configMap", "downwardAPI" or "serviceAccountToken"
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False
    # downwardAPI: (path, fieldPath) pairs
    fields: tuple[tuple[str, str], ...] = ()
    # serviceAccountToken
    path: str = ""
    audience: str = ""
    expiration_seconds: int = 3600


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # "hostPath", "emptyDir", "secret", "configMap", "projected", "downwardAPI"
    path: str = ""  # hostPath
    host_path_type: str = ""
    source_name: str = ""  # secret / configMap name
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False
    default_mode: int = 0o644
    sources: tuple[ProjectionSource, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()  # downwardAPI volume


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    working_dir: str = ""
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort)
    volume_mounts: tuple[VolumeMount, ...] = ()
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    read_only_root: bool = False
    supplemental_groups: tuple[int, ...] = ()  # the pod's fsGroup and supplementalGroups
    # where the container may write its termination message, and whether an empty one
    # after a failure is made of the log's tail (the API's defaults: static pods too)
    termination_message_path: str = DEFAULT_TERMINATION_MESSAGE_PATH
    termination_message_policy: str = "File"

    def port_number(self, port: int | str) -> int:
        """A probe's port: a number, or the name of one of this container's ports."""
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        for name, number in self.ports:
            if name == port:
                return number
        raise PodSpecError(f"container {self.name!r} has no port named {port!r}")


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    uid: str
    node_name: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    host_network: bool = False
    restart_policy: str = "Always"
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    service_account: str = "default"
    hostname: str = ""
    annotations: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    fs_group: int | None = None  # volumes are group-owned by it, as the kubelet does

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def volume(self, name: str) -> Volume:
        for v in self.volumes:
            if v.name == name:
                return v
        raise PodSpecError(f"volume {name!r} is mounted but not defined")


# --- parsing ------------------------------------------------------------------


def _str_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise PodSpecError(f"expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value)


def parse_probe(data: Mapping[str, Any] | None) -> Probe | None:
    """A probe in the API's shape (`httpGet`, `tcpSocket`, `exec` or `grpc`)."""
    if not data:
        return None
    timing: dict[str, Any] = {
        "initial_delay": float(data.get("initialDelaySeconds") or 0),
        "period": float(data.get("periodSeconds") or 10),
        "timeout": float(data.get("timeoutSeconds") or 1),
        "success_threshold": _int(data.get("successThreshold"), 1),
        "failure_threshold": _int(data.get("failureThreshold"), 3),
    }
    if (http := data.get("httpGet")) is not None:
        headers = tuple(
            (str(h["name"]), str(h.get("value", ""))) for h in http.get("httpHeaders") or ()
        )
        scheme = str(http.get("scheme") or "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise PodSpecError(f"httpGet scheme {scheme!r} is not HTTP or HTTPS")
        return Probe(
            kind="http",
            port=_port(http.get("port")),
            path=str(http.get("path") or "/"),
            scheme=scheme,
            host=str(http.get("host") or ""),
            headers=headers,
            **timing,
        )
    if (tcp := data.get("tcpSocket")) is not None:
        return Probe(
            kind="tcp", port=_port(tcp.get("port")), host=str(tcp.get("host") or ""), **timing
        )
    if (exe := data.get("exec")) is not None:
        command = _str_tuple(exe.get("command"))
        if not command:
            raise PodSpecError("exec probe without a command")
        return Probe(kind="exec", command=command, **timing)
    if (grpc := data.get("grpc")) is not None:
        return Probe(kind="grpc", port=_port(grpc.get("port")), **timing)
    raise PodSpecError(f"probe with no handler: {sorted(data)}")


def _port(value: Any) -> int | str:
    if value is None:
        raise PodSpecError("probe without a port")
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else text


def _key_to_paths(items: Any) -> tuple[KeyToPath, ...]:
    return tuple(
        KeyToPath(key=str(i["key"]), path=str(i["path"]), mode=i.get("mode")) for i in items or ()
    )


def _env(data: Mapping[str, Any]) -> EnvVar:
    name = str(data["name"])
    if "valueFrom" not in data or data["valueFrom"] is None:
        return EnvVar(name=name, value=str(data.get("value") or ""))
    source = data["valueFrom"]
    if (ref := source.get("fieldRef")) is not None:
        return EnvVar(name=name, field_path=str(ref["fieldPath"]))
    for kind, key in (("secret", "secretKeyRef"), ("configMap", "configMapKeyRef")):
        if (ref := source.get(key)) is not None:
            return EnvVar(
                name=name,
                key_ref=KeyRef(
                    kind=kind,
                    name=str(ref.get("name") or ""),
                    key=str(ref["key"]),
                    optional=bool(ref.get("optional")),
                ),
            )
    raise PodSpecError(f"env {name}: valueFrom {sorted(source)} is not supported by the lab")


def _container(data: Mapping[str, Any], pod_security: Mapping[str, Any]) -> Container:
    security = data.get("securityContext") or {}
    run_as_user = security.get("runAsUser", pod_security.get("runAsUser"))
    run_as_group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    ports = tuple(
        (str(p.get("name") or ""), int(p["containerPort"])) for p in data.get("ports") or ()
    )
    mounts = tuple(
        VolumeMount(
            name=str(m["name"]),
            mount_path=str(m["mountPath"]),
            sub_path=str(m.get("subPath") or ""),
            read_only=bool(m.get("readOnly")),
        )
        for m in data.get("volumeMounts") or ()
    )
    name = str(data.get("name") or "")
    if not name:
        raise PodSpecError("a container has no name")
    policy = str(data.get("terminationMessagePolicy") or "File")
    if policy not in TERMINATION_MESSAGE_POLICIES:
        raise PodSpecError(
            f"container {name!r}: terminationMessagePolicy {policy!r} is not one of "
            + ", ".join(TERMINATION_MESSAGE_POLICIES)
        )
    return Container(
        name=name,
        image=str(data.get("image") or ""),
        command=_str_tuple(data.get("command")),
        args=_str_tuple(data.get("args")),
        env=tuple(_env(e) for e in data.get("env") or ()),
        working_dir=str(data.get("workingDir") or ""),
        ports=ports,
        volume_mounts=mounts,
        liveness=parse_probe(data.get("livenessProbe")),
        readiness=parse_probe(data.get("readinessProbe")),
        startup=parse_probe(data.get("startupProbe")),
        run_as_user=None if run_as_user is None else int(run_as_user),
        run_as_group=None if run_as_group is None else int(run_as_group),
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        supplemental_groups=_groups(pod_security),
        termination_message_path=str(
            data.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        ),
        termination_message_policy=policy,
    )


def _groups(pod_security: Mapping[str, Any]) -> tuple[int, ...]:
    groups = [int(g) for g in pod_security.get("supplementalGroups") or ()]
    if pod_security.get("fsGroup") is not None:
        groups.insert(0, int(pod_security["fsGroup"]))
    return tuple(dict.fromkeys(groups))


def _projection(data: Mapping[str, Any]) -> ProjectionSource:
    if (s := data.get("secret")) is not None:
        return ProjectionSource(
            kind="secret",
            name=str(s.get("name") or ""),
            items=_key_to_paths(s.get("items")),
            optional=bool(s.get("optional")),
        )
    if (c := data.get("configMap")) is not None:
        return ProjectionSource(
            kind="configMap",
            name=str(c.get("name") or ""),
            items=_key_to_paths(c.get("items")),
            optional=bool(c.get("optional")),
        )
    if (d := data.get("downwardAPI")) is not None:
        return ProjectionSource(kind="downwardAPI", fields=_downward_fields(d.get("items")))
    if (t := data.get("serviceAccountToken")) is not None:
        return ProjectionSource(
            kind="serviceAccountToken",
            path=str(t["path"]),
            audience=str(t.get("audience") or ""),
            expiration_seconds=_int(t.get("expirationSeconds"), 3600),
        )
    raise PodSpecError(f"projected volume source {sorted(data)} is not supported by the lab")


def _downward_fields(items: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items or ():
        ref = item.get("fieldRef")
        if ref is None:
            raise PodSpecError("downwardAPI resourceFieldRef is not supported by the lab")
        out.append((str(item["path"]), str(ref["fieldPath"])))
    return tuple(out)


def _volume(data: Mapping[str, Any]) -> Volume:
    name = str(data["name"])
    if (hp := data.get("hostPath")) is not None:
        return Volume(
            name=name,
            kind="hostPath",
            path=str(hp["path"]),
            host_path_type=str(hp.get("type") or ""),
        )
    if "emptyDir" in data:
        return Volume(name=name, kind="emptyDir")
    if (s := data.get("secret")) is not None:
        return Volume(
            name=name,
            kind="secret",
            source_name=str(s.get("secretName") or ""),
            items=_key_to_paths(s.get("items")),
            optional=bool(s.get("optional")),
            default_mode=_int(s.get("defaultMode"), 0o644),
        )
    if (c := data.get("configMap")) is not None:
        return Volume(
            name=name,
            kind="configMap",
            source_name=str(c.get("name") or ""),
            items=_key_to_paths(c.get("items")),
            optional=bool(c.get("optional")),
            default_mode=_int(c.get("defaultMode"), 0o644),
        )
    if (p := data.get("projected")) is not None:
        return Volume(
            name=name,
            kind="projected",
            sources=tuple(_projection(s) for s in p.get("sources") or ()),
            default_mode=_int(p.get("defaultMode"), 0o644),
        )
    if (d := data.get("downwardAPI")) is not None:
        return Volume(
            name=name,
            kind="downwardAPI",
            fields=_downward_fields(d.get("items")),
            default_mode=_int(d.get("defaultMode"), 0o644),
        )
    kinds = sorted(k for k in data if k != "name")
    raise PodSpecError(f"volume {name!r}: type {kinds} is not supported by the lab")


def parse_pod(obj: Mapping[str, Any], *, node_name: str = "", uid: str = "") -> PodSpec:
    """Parse a Pod (API JSON shape). `uid` overrides metadata.uid (static pods)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise PodSpecError("pod without metadata.name")
    pod_security = spec.get("securityContext") or {}
    containers = tuple(_container(c, pod_security) for c in spec.get("containers") or ())
    if not containers:
        raise PodSpecError(f"pod {name}: no containers")
    grace = spec.get("terminationGracePeriodSeconds")
    return PodSpec(
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        uid=uid or str(meta.get("uid") or ""),
        node_name=node_name or str(spec.get("nodeName") or ""),
        containers=containers,
        init_containers=tuple(
            _container(c, pod_security) for c in spec.get("initContainers") or ()
        ),
        volumes=tuple(_volume(v) for v in spec.get("volumes") or ()),
        host_network=bool(spec.get("hostNetwork")),
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        grace_seconds=DEFAULT_GRACE_SECONDS if grace is None else int(grace),
        service_account=str(spec.get("serviceAccountName") or "default"),
        hostname=str(spec.get("hostname") or ""),
        annotations=tuple(sorted((meta.get("annotations") or {}).items())),
        fs_group=None if pod_security.get("fsGroup") is None else int(pod_security["fsGroup"]),
    )
