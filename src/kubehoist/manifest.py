"""Static pod manifest (YAML text) -> a typed, frozen model of what kubehoist needs.

It reads a manifest into `StaticPod`, with one-line `KubehoistError`s that name the
file and the field ("kube-controller-manager.yaml: spec.containers[0].command: ...").
The YAML is read through the bounded loader (`kubehoist.safeyaml`), the container's
command line through `kubehoist.argv` (re-exported here).

Pure: it parses text it is given and reads no file.
"""

from __future__ import annotations

import copy
import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubehoist import components, safeyaml
from kubehoist.argv import (
    Arg,
    ComponentArgv,
    Flag,
    FlagForm,
    FlagSyntaxError,
    Positional,
    flag_values,
    parse_flags,
    split_argv,
    stray_argument,
    unparse,
)
from kubehoist.components import Component
from kubehoist.errors import KubehoistError

# The command line model lives in `kubehoist.argv`; re-exported here for callers.
__all__ = [
    "Arg",
    "ComponentArgv",
    "Flag",
    "FlagForm",
    "FlagSyntaxError",
    "PathOnHost",
    "Positional",
    "StaticPod",
    "Volume",
    "VolumeMount",
    "flag_values",
    "load_static_pod",
    "load_yaml_document",
    "parse_flags",
    "split_argv",
    "static_pod_from_dict",
    "stray_argument",
    "unparse",
]


# --------------------------------------------------------------------------- pod model


@dataclass(frozen=True, kw_only=True)
class Volume:
    name: str
    host_path: str | None
    """hostPath.path, or None for any other volume type."""
    kind: str
    """The volume source key: "hostPath", "emptyDir", ..."""
    raw: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class PathOnHost:
    """Where a path inside the container comes from."""

    volume: str
    kind: str
    host_path: str | None
    """The file's path on the node when the volume is a hostPath, else None."""


@dataclass(frozen=True, kw_only=True)
class StaticPod:
    """A static pod manifest of a component kubehoist can move."""

    source: str
    """How errors name the manifest (its file name, or "pod/NAME" for a live pod)."""
    sha256: str
    """sha256 of the manifest text."""
    name: str
    namespace: str
    labels: Mapping[str, str]
    component: Component
    container_index: int
    container: Mapping[str, Any]
    """The component's container, as parsed (treat as read-only)."""
    spec: Mapping[str, Any]
    """The pod spec, as parsed (treat as read-only)."""
    image: str
    argv: ComponentArgv
    volumes: tuple[Volume, ...]
    mounts: tuple[VolumeMount, ...]
    host_network: bool
    other_containers: tuple[str, ...]

    def field(self, sub: str) -> str:
        return f"spec.containers[{self.container_index}].{sub}"

    def error(self, sub: str, message: str) -> KubehoistError:
        """A one-line error naming this manifest and a field of its container."""
        return KubehoistError(f"{self.source}: {self.field(sub)}: {message}")

    def flag_error(self, item_index: int, message: str) -> KubehoistError:
        return self.error(self.argv.field_of_item(item_index), message)

    def locate(self, container_path: str) -> PathOnHost | None:
        """Which volume a container path lives on, and its node path for a hostPath."""
        path = posixpath.normpath(container_path)
        by_name = {v.name: v for v in self.volumes}
        for mount in sorted(self.mounts, key=lambda m: len(m.mount_path), reverse=True):
            base = posixpath.normpath(mount.mount_path)
            if path != base and not path.startswith(base.rstrip("/") + "/"):
                continue
            volume = by_name.get(mount.name)
            if volume is None:
                return PathOnHost(volume=mount.name, kind="missing", host_path=None)
            if volume.host_path is None:
                return PathOnHost(volume=volume.name, kind=volume.kind, host_path=None)
            rest = posixpath.relpath(path, base) if path != base else ""
            host = posixpath.join(volume.host_path, mount.sub_path or "", rest)
            return PathOnHost(
                volume=volume.name, kind="hostPath", host_path=posixpath.normpath(host)
            )
        return None


def _fail(source: str, fld: str, message: str) -> KubehoistError:
    return KubehoistError(f"{source}: {fld}: {message}" if fld else f"{source}: {message}")


def _mapping(source: str, fld: str, value: Any, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, fld, f"expected a mapping, got {_kind(value)}")
    return value


def _list(source: str, fld: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(source, fld, f"expected a list, got {_kind(value)}")
    return value


def _str(source: str, fld: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(source, fld, f"expected a string, got {_kind(value)}")
    return value


def _strings(source: str, fld: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = _list(source, fld, value)
    return tuple(_str(source, f"{fld}[{i}]", v) for i, v in enumerate(items))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def load_yaml_document(text: str, *, source: str, what: str = "Pod") -> Any:
    """The one YAML document in `text`, or a one-line error (bounded: `kubehoist.safeyaml`)."""
    return safeyaml.load_document(text, source=source, what=what)


def load_static_pod(text: str, *, source: str) -> StaticPod:
    """Parse a static pod manifest of kube-controller-manager or kube-scheduler."""
    doc = load_yaml_document(text, source=source)
    return static_pod_from_dict(
        doc, source=source, sha256=hashlib.sha256(text.encode()).hexdigest()
    )


def static_pod_from_dict(doc: Any, *, source: str, sha256: str) -> StaticPod:
    """`load_static_pod` for an already parsed document (e.g. a live mirror pod)."""
    doc = copy.deepcopy(doc)
    if not isinstance(doc, dict):
        raise _fail(source, "", f"expected a Pod (a mapping), got {_kind(doc)}")
    kind = doc.get("kind")
    if kind != "Pod":
        raise _fail(source, "kind", f"expected Pod, got {_kind(kind)}")
    api_version = doc.get("apiVersion")
    if api_version != "v1":
        raise _fail(source, "apiVersion", f"expected v1, got {_kind(api_version)}")
    metadata = _mapping(source, "metadata", doc.get("metadata"), required=False)
    name = _str(source, "metadata.name", metadata.get("name", ""))
    namespace = _str(source, "metadata.namespace", metadata.get("namespace") or "kube-system")
    labels_raw = _mapping(source, "metadata.labels", metadata.get("labels"), required=False)
    labels = {
        _str(source, "metadata.labels", k): _str(source, f"metadata.labels.{k}", v)
        for k, v in labels_raw.items()
    }
    spec = _mapping(source, "spec", doc.get("spec"))
    containers = _list(source, "spec.containers", spec.get("containers"))
    if not containers:
        raise _fail(source, "spec.containers", "no container")

    found: tuple[int, Component] | None = None
    names: list[str] = []
    for i, raw in enumerate(containers):
        fld = f"spec.containers[{i}]"
        c = _mapping(source, fld, raw)
        cname = _str(source, f"{fld}.name", c.get("name", ""))
        names.append(cname)
        argv = (_strings(source, f"{fld}.command", c.get("command")) or ()) + (
            _strings(source, f"{fld}.args", c.get("args")) or ()
        )
        component = components.detect(container_name=cname, argv=argv)
        if component is not None and found is None:
            found = (i, component)
    if found is None:
        wanted = " or ".join(components.COMPONENTS)
        shown = ", ".join(repr(n) for n in names)
        fld = "spec.containers[0].name" if len(names) == 1 else "spec.containers"
        raise _fail(source, fld, f"{shown} is not {wanted}")
    index, component = found
    container = containers[index]
    fld = f"spec.containers[{index}]"

    image = container.get("image")
    if not isinstance(image, str) or not image:
        raise _fail(source, f"{fld}.image", f"expected an image reference, got {_kind(image)}")
    command = _strings(source, f"{fld}.command", container.get("command"))
    args = _strings(source, f"{fld}.args", container.get("args"))
    split = split_argv(command=command, args=args, component=component)
    if isinstance(split, str):
        where = "args" if not command and args else "command"
        raise _fail(source, f"{fld}.{where}", split)
    prefix, first = split
    tokens = (command or ()) + (args or ())
    n = len(command or ())

    def token_field(at: int) -> str:
        return f"{fld}.command[{at}]" if at < n else f"{fld}.args[{at - n}]"

    try:
        parsed = parse_flags(
            tokens[first:], bool_flags=component.bool_flags, value_flags=component.value_flags
        )
    except FlagSyntaxError as exc:
        raise _fail(source, token_field(first + exc.index), str(exc)) from None
    stray = stray_argument([a for a, _ in parsed], component.bool_flags)
    if stray is not None:
        raise _fail(source, token_field(first + parsed[stray[0]][1]), stray[1])
    argv_model = ComponentArgv(
        command=command,
        args=args,
        prefix=prefix,
        items=tuple(a for a, _ in parsed),
        starts=tuple(first + s for _, s in parsed),
    )

    volumes: list[Volume] = []
    for i, raw in enumerate(_list(source, "spec.volumes", spec.get("volumes"))):
        vfld = f"spec.volumes[{i}]"
        v = _mapping(source, vfld, raw)
        vname = _str(source, f"{vfld}.name", v.get("name"))
        kinds = sorted(k for k in v if k != "name")
        vkind = kinds[0] if kinds else "emptyDir"
        host_path: str | None = None
        if "hostPath" in v:
            hp = _mapping(source, f"{vfld}.hostPath", v["hostPath"])
            host_path = _str(source, f"{vfld}.hostPath.path", hp.get("path"))
            vkind = "hostPath"
        if any(v.name == vname for v in volumes):
            raise _fail(source, f"{vfld}.name", f"{vname!r}: a second volume of that name")
        volumes.append(Volume(name=vname, host_path=host_path, kind=vkind, raw=v))
    names_of_volumes = {v.name for v in volumes}
    mounts: list[VolumeMount] = []
    for i, raw in enumerate(_list(source, f"{fld}.volumeMounts", container.get("volumeMounts"))):
        mfld = f"{fld}.volumeMounts[{i}]"
        m = _mapping(source, mfld, raw)
        mname = _str(source, f"{mfld}.name", m.get("name"))
        if mname not in names_of_volumes:
            raise _fail(source, f"{mfld}.name", f"{mname!r} names no volume in spec.volumes")
        mount_path = _str(source, f"{mfld}.mountPath", m.get("mountPath"))
        if not mount_path.startswith("/"):
            raise _fail(source, f"{mfld}.mountPath", f"{mount_path!r} is not an absolute path")
        sub_path = m.get("subPath")
        if sub_path:
            sub_path = _str(source, f"{mfld}.subPath", sub_path)
            if sub_path.startswith("/") or ".." in sub_path.split("/"):
                raise _fail(
                    source,
                    f"{mfld}.subPath",
                    f"{sub_path!r}: expected a relative path without '..'",
                )
        mounts.append(
            VolumeMount(
                name=mname,
                mount_path=mount_path,
                read_only=bool(m.get("readOnly", False)),
                sub_path=sub_path or None,
                raw=m,
            )
        )
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        raise _fail(source, "spec.hostNetwork", f"expected a boolean, got {_kind(host_network)}")
    return StaticPod(
        source=source,
        sha256=sha256,
        name=name,
        namespace=namespace,
        labels=labels,
        component=component,
        container_index=index,
        container=container,
        spec=spec,
        image=image,
        argv=argv_model,
        volumes=tuple(volumes),
        mounts=tuple(mounts),
        host_network=host_network,
        other_containers=tuple(n for i, n in enumerate(names) if i != index),
    )
