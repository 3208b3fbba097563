"""Volumes: where each of a pod's volumes lives on the host, what goes into it, and
which bind mounts make a container's `volumeMounts` appear at their `mountPath`.

hostPath volumes resolve inside the node's root directory (`<node-root>/<path>`), so
`/etc/kubernetes/pki` of a control-plane node is `<root>/nodes/cp-1/etc/kubernetes/pki`.
Every other volume is a directory under the pod's directory
`<node-root>/var/lib/kubelet/pods/<uid>/volumes/<plugin>/<name>`, as on a real node;
secret, configMap, downwardAPI and projected volumes are written once when the pod
starts (not refreshed later) and are always mounted read-only.

`plan_mounts` and `field_value` are pure; `materialize` writes the volume directories
and asks a `VolumeData` (the API) for secrets, config maps and tokens.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubehoist.lab.kubelet.launcher import Mount
from kubehoist.lab.kubelet.podspec import (
    Container,
    KeyToPath,
    PodSpec,
    PodSpecError,
    Volume,
)

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "secret": "kubernetes.io~secret",
    "configMap": "kubernetes.io~configmap",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}
ALWAYS_READ_ONLY = frozenset({"secret", "configMap", "projected", "downwardAPI"})


class VolumeError(Exception):
    """A volume that cannot be set up (yet): reported, then retried."""


class VolumeData(Protocol):
    async def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    async def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    async def token(self, pod: PodSpec, audience: str, expiration_seconds: int) -> str: ...


@dataclass(frozen=True)
class PodFields:
    """What the downward API can expose besides the pod spec itself."""

    pod_ip: str
    host_ip: str
    labels: tuple[tuple[str, str], ...] = ()


def pod_dir(node_root: Path, uid: str) -> Path:
    return node_root / "var" / "lib" / "kubelet" / "pods" / uid


def host_path(node_root: Path, path: str) -> Path:
    """A hostPath inside the node's root; `..` cannot climb out of it."""
    parts = [p for p in Path("/" + path).parts[1:] if p not in ("", ".", "..")]
    return node_root.joinpath(*parts)


def volume_dir(node_root: Path, pod: PodSpec, volume: Volume) -> Path:
    if volume.kind == "hostPath":
        return host_path(node_root, volume.path)
    return pod_dir(node_root, pod.uid) / "volumes" / PLUGIN_DIRS[volume.kind] / volume.name


def plan_mounts(node_root: Path, pod: PodSpec, container: Container) -> tuple[Mount, ...]:
    """The bind mounts of one container, in the order of its volumeMounts."""
    mounts = []
    for vm in container.volume_mounts:
        volume = pod.volume(vm.name)
        source = volume_dir(node_root, pod, volume)
        if vm.sub_path:
            sub = Path(vm.sub_path)
            if sub.is_absolute() or ".." in sub.parts:
                raise PodSpecError(f"subPath {vm.sub_path!r} must be a relative path without '..'")
            source = source / sub
        mounts.append(
            Mount(
                source=str(source),
                target=vm.mount_path,
                read_only=vm.read_only or volume.kind in ALWAYS_READ_ONLY,
            )
        )
    return tuple(mounts)


def field_value(pod: PodSpec, fields: PodFields, path: str) -> str:
    """A downward-API fieldRef's value (env `fieldRef` and downwardAPI volumes)."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": fields.pod_ip,
        "status.podIPs": fields.pod_ip,
        "status.hostIP": fields.host_ip,
        "status.hostIPs": fields.host_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, items in (
        ("metadata.labels", fields.labels),
        ("metadata.annotations", pod.annotations),
    ):
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return dict(items).get(path[len(prefix) + 2 : -2], "")
    raise PodSpecError(f"fieldRef {path!r} is not supported by the lab kubelet")


def select_items(
    data: Mapping[str, bytes], items: tuple[KeyToPath, ...], what: str, default_mode: int
) -> list[tuple[str, bytes, int]]:
    """(relative path, content, mode) for a secret or config map projection."""
    if not items:
        return [(k, v, default_mode) for k, v in sorted(data.items())]
    out = []
    for item in items:
        if item.key not in data:
            raise VolumeError(f"{what}: no key {item.key!r}")
        out.append(
            (item.path, data[item.key], item.mode if item.mode is not None else default_mode)
        )
    return out


def _write_files(
    directory: Path, files: list[tuple[str, bytes, int]], fs_group: int | None = None
) -> None:
    """Write a volume's files at once. With an fsGroup, as the kubelet does, the files
    are owned by that group and group-readable (the volumes written here are read-only)."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel, content, mode in files:
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise VolumeError(f"item path {rel!r} must be relative without '..'")
        target = tmp / p
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if fs_group is not None:
            os.chown(target, -1, fs_group)
            mode |= 0o440
        os.chmod(target, mode)
    if fs_group is not None:
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            os.chown(d, -1, fs_group)
            os.chmod(d, 0o2755)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


async def _keyed(
    api: VolumeData, kind: str, namespace: str, name: str, optional: bool
) -> Mapping[str, bytes]:
    data = await (
        api.secret(namespace, name) if kind == "secret" else api.config_map(namespace, name)
    )
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    return data


async def materialize(node_root: Path, pod: PodSpec, fields: PodFields, api: VolumeData) -> None:
    """Create every volume of the pod; raise VolumeError if one cannot be made yet."""
    for volume in pod.volumes:
        target = volume_dir(node_root, pod, volume)
        if volume.kind == "hostPath":
            _host_path(target, volume)
        elif volume.kind == "emptyDir":
            target.mkdir(parents=True, exist_ok=True)
            if pod.fs_group is not None:
                os.chown(target, -1, pod.fs_group)
                os.chmod(target, 0o2777)
        elif volume.kind in ("secret", "configMap"):
            data = await _keyed(
                api, volume.kind, pod.namespace, volume.source_name, volume.optional
            )
            _write_files(
                target,
                select_items(
                    data, volume.items, f"{volume.kind} {volume.source_name}", volume.default_mode
                ),
                pod.fs_group,
            )
        elif volume.kind == "downwardAPI":
            _write_files(
                target,
                [
                    (path, field_value(pod, fields, fp).encode(), volume.default_mode)
                    for path, fp in volume.fields
                ],
                pod.fs_group,
            )
        elif volume.kind == "projected":
            files: list[tuple[str, bytes, int]] = []
            for src in volume.sources:
                if src.kind in ("secret", "configMap"):
                    data = await _keyed(api, src.kind, pod.namespace, src.name, src.optional)
                    files += select_items(
                        data, src.items, f"{src.kind} {src.name}", volume.default_mode
                    )
                elif src.kind == "downwardAPI":
                    files += [
                        (path, field_value(pod, fields, fp).encode(), volume.default_mode)
                        for path, fp in src.fields
                    ]
                elif src.kind == "serviceAccountToken":
                    token = await api.token(pod, src.audience, src.expiration_seconds)
                    files.append((src.path, token.encode(), volume.default_mode))
            _write_files(target, files, pod.fs_group)
        else:  # parse_pod admits nothing else
            raise VolumeError(f"volume {volume.name}: {volume.kind} is not supported")


def _host_path(target: Path, volume: Volume) -> None:
    kind = volume.host_path_type
    if kind in ("", "DirectoryOrCreate"):
        if not target.exists():
            target.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    elif kind == "Directory":
        if not target.is_dir():
            raise VolumeError(f"hostPath type check failed: {volume.path} is not a directory")
    elif kind == "File":
        if not target.is_file():
            raise VolumeError(f"hostPath type check failed: {volume.path} is not a file")
    elif not target.exists():
        raise VolumeError(f"hostPath {volume.path} does not exist")


def ensure_sub_paths(
    mounts: tuple[Mount, ...], node_root: Path, pod: PodSpec, container: Container
) -> None:
    """subPath directories are created when missing, as the kubelet does."""
    for vm, m in zip(container.volume_mounts, mounts, strict=True):
        if vm.sub_path and not os.path.exists(m.source):
            Path(m.source).mkdir(parents=True, exist_ok=True)


def remove_pod_dir(node_root: Path, uid: str) -> None:
    shutil.rmtree(pod_dir(node_root, uid), ignore_errors=True)
