"""Which files the flags name: the paths in flag values, and the node files behind them.

Two sources, one rule for what travels:

* Flags render knows to name files (`Component.files`: kubeconfigs, certificates,
  keys, kube-scheduler's `--config`, ...) and paths (`Component.paths`: what the
  process writes, host directories), with what each file is.
* Every other flag whose value holds an absolute path (`/etc/x`, a list `/a,/b`, or
  `key=/path` items) that resolves through a `hostPath` volume mount of the container.
  Render drops every hostPath volume, so such a file would be missing from the
  Deployment's pods: it is carried like the others (role `FileRole.FOUND`, decided
  once its bytes are read) and the flag then names the carried copy. A path on no
  volume is inside the image; one on another volume type (a configMap, an emptyDir)
  travels with that volume; both are left alone.

Pure: the bytes are read by the caller (`kubehoist.hostfiles`) or looked up in `Inputs`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubehoist import flagtable
from kubehoist.components import FileRole, PathKind
from kubehoist.errors import KubehoistError
from kubehoist.manifest import Arg, Flag, PathOnHost, StaticPod

NOT_FILES = frozenset({"authorization-always-allow-paths", "master"})
"""Flags whose values hold absolute paths that are not files (HTTP paths, URLs)."""


@dataclass(frozen=True, kw_only=True)
class FileNeed:
    """A file the pod needs, found through a flag or through another file."""

    path: str
    """Absolute, normalised path inside the container."""
    role: FileRole
    label: str
    """How messages name it: "/etc/kubernetes/pki/ca.crt (--root-ca-file)"."""
    where: str
    """The field that names it, for errors: "kcm.yaml: spec.containers[0].command[5]"."""
    host: PathOnHost
    flag: str


Reader = Callable[[FileNeed], bytes]


@dataclass(frozen=True, kw_only=True)
class PathRef:
    """Paths in one flag's value, and how to put other paths in their place."""

    item_index: int
    flag: Flag
    role: FileRole | PathKind
    paths: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    """Where each path sits in the flag's value."""

    def value_with(self, paths: Sequence[str]) -> str:
        """The flag's value with each path replaced by the one in `paths`."""
        value = self.flag.value or ""
        for (start, end), path in sorted(zip(self.spans, paths, strict=True), reverse=True):
            value = value[:start] + path + value[end:]
        return value


def value_paths(value: str) -> tuple[tuple[int, int], ...]:
    """Spans of the absolute paths in a flag value: the value, items of a comma
    list, or the value of `key=value` items (`/a`, `/a,/b`, `k=/a,j=/b`)."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for item in value.split(","):
        start = offset
        offset += len(item) + 1
        if not item.startswith("/"):
            key, eq, rest = item.partition("=")
            if not eq or not rest.startswith("/") or "/" in key:
                continue
            start += len(key) + 1
            item = rest
        if len(item) > 1:
            spans.append((start, start + len(item)))
    return tuple(spans)


def path_refs(pod: StaticPod, items: Sequence[Arg]) -> tuple[PathRef, ...]:
    """The paths every flag names, known file flags first in meaning, others by shape."""
    component = pod.component
    refs: list[PathRef] = []
    for index, item in enumerate(items):
        if not isinstance(item, Flag) or item.value is None:
            continue
        name = flagtable.normalize(item.name)
        role: FileRole | PathKind | None = component.files.get(name) or component.paths.get(name)
        value = item.value
        if role is FileRole.SNI_CERT_KEY:
            files = value.partition(":")[0]
            parts = files.split(",")
            if len(parts) != 2:
                raise flag_error(pod, items, index, f"{item}: expected cert,key[:domains]")
            spans = []
            at = 0
            for part in parts:
                lead = len(part) - len(part.lstrip())
                spans.append((at + lead, at + len(part.rstrip())))
                at += len(part) + 1
            paths = tuple(value[a:b] for a, b in spans)
        elif role is not None:
            spans, paths = [(0, len(value))], (value,)
        elif name in component.owned_flags or name in NOT_FILES:
            continue
        else:
            spans = [(a, b) for a, b in value_paths(value) if _on_host(pod, value[a:b])]
            if not spans:
                continue
            role = FileRole.FOUND
            paths = tuple(value[a:b] for a, b in spans)
        refs.append(
            PathRef(item_index=index, flag=item, role=role, paths=paths, spans=tuple(spans))
        )
    return tuple(refs)


def _on_host(pod: StaticPod, path: str) -> bool:
    host = pod.locate(posixpath.normpath(path))
    return host is not None and host.host_path is not None


def flag_error(pod: StaticPod, items: Sequence[Arg], index: int, message: str) -> KubehoistError:
    item = items[index]
    source_index = next((i for i, s in enumerate(pod.argv.items) if s is item), None)
    if source_index is not None:
        return pod.flag_error(source_index, message)
    return pod.error(pod.argv.flags_field, message)


def _where(pod: StaticPod, items: Sequence[Arg], index: int) -> str:
    item = items[index]
    source_index = next((i for i, s in enumerate(pod.argv.items) if s is item), None)
    if source_index is None:
        return f"{pod.source}: --{getattr(item, 'name', '?')} (set by render options)"
    return f"{pod.source}: {pod.field(pod.argv.field_of_item(source_index))}"


@dataclass(frozen=True, kw_only=True)
class NeedsPlan:
    """Files the flags name, and what render must say about the paths it leaves alone."""

    needs: tuple[FileNeed, ...]
    writable_dirs: tuple[str, ...]
    warnings: tuple[str, ...]


def plan_flag_needs(pod: StaticPod, items: Sequence[Arg]) -> NeedsPlan:
    """Files named by flags (not yet those named inside kubeconfigs)."""
    needs: list[FileNeed] = []
    writable: set[str] = set()
    warnings: list[str] = []
    for ref in path_refs(pod, items):
        flag = ref.flag
        for raw in ref.paths:
            if not raw or not raw.startswith("/"):
                raise flag_error(
                    pod, items, ref.item_index, f"{flag}: {raw!r} is not an absolute path"
                )
            path = posixpath.normpath(raw)
            if isinstance(ref.role, PathKind):
                if ref.role is PathKind.OUTPUT_FILE:
                    writable.add(posixpath.dirname(path))
                elif ref.role is PathKind.OUTPUT_DIR:
                    writable.add(path)
                else:
                    warnings.append(
                        f"--{flag.name}={path}: the node's {path} is not mounted into the "
                        "Deployment's pods (hostPath volumes are dropped)"
                    )
                continue
            host = pod.locate(path)
            label = f"{path} (--{flag.name})"
            if host is None:
                warnings.append(
                    f"{label}: not on any volume of the static pod, so it is taken to be "
                    "inside the image; left as is"
                )
                continue
            if host.host_path is None:
                raise flag_error(
                    pod,
                    items,
                    ref.item_index,
                    f"{flag}: {path} is on volume {host.volume!r} ({host.kind}), not a "
                    "hostPath: kubehoist can only carry files from the node",
                )
            if ref.role is FileRole.FOUND:
                warnings.append(
                    f"{label}: render does not know --{flag.name} to name a file, but "
                    f"{path} is on hostPath volume {host.volume!r}, which the Deployment "
                    "drops: the file is carried with the credentials"
                )
            needs.append(
                FileNeed(
                    path=path,
                    role=ref.role,
                    label=label,
                    where=_where(pod, items, ref.item_index),
                    host=host,
                    flag=f"--{flag.name}",
                )
            )
    for token in pod.argv.prefix:  # a wrapper's log file (go-runner --log-file=...)
        if token.startswith("--log-file="):
            path = token.split("=", 1)[1]
            if path.startswith("/"):
                writable.add(posixpath.dirname(posixpath.normpath(path)))
    return NeedsPlan(
        needs=tuple(needs), writable_dirs=tuple(sorted(writable)), warnings=tuple(warnings)
    )
