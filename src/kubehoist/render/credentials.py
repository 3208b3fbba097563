"""Which files the pod needs, under which Secret keys, with which bytes.

From the final flag list this module finds every file the component reads (flags,
then the files the kubeconfigs and component config name), checks each one (PEM
certificates parse and are in date, keys parse, kubeconfigs are sound), gives each
a stable Secret key, and produces the flag list and the file contents with every
path pointed at the mounted credentials directory.

Reading is injected (`Reader`): the gatherer passes one that reads the node's files,
the renderer one that looks the bytes up in `Inputs`. This module does no I/O.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from kubehoist.components import FileRole, PathKind
from kubehoist.constants import CREDENTIALS_DIR
from kubehoist.errors import KubehoistError
from kubehoist.manifest import Arg, Flag, PathOnHost, StaticPod, load_yaml_document
from kubehoist.render import kubeconfig, pki
from kubehoist.render.options import Inputs, RenderOptions


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
class _PathRef:
    item_index: int
    flag: Flag
    role: FileRole | PathKind
    paths: tuple[str, ...]
    domains: str | None = None


def _path_refs(pod: StaticPod, items: Sequence[Arg]) -> tuple[_PathRef, ...]:
    component = pod.component
    refs: list[_PathRef] = []
    for index, item in enumerate(items):
        if not isinstance(item, Flag):
            continue
        role: FileRole | PathKind | None = component.files.get(item.name) or component.paths.get(
            item.name
        )
        if role is None or item.value is None:
            continue
        if role is FileRole.SNI_CERT_KEY:
            files, _, domains = item.value.partition(":")
            parts = tuple(p.strip() for p in files.split(","))
            if len(parts) != 2:
                raise _flag_error(pod, items, index, f"{item}: expected cert,key[:domains]")
            refs.append(
                _PathRef(
                    item_index=index, flag=item, role=role, paths=parts, domains=domains or None
                )
            )
            continue
        refs.append(_PathRef(item_index=index, flag=item, role=role, paths=(item.value,)))
    return tuple(refs)


def _flag_error(pod: StaticPod, items: Sequence[Arg], index: int, message: str) -> KubehoistError:
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
    for ref in _path_refs(pod, items):
        flag = ref.flag
        for raw in ref.paths:
            if not raw or not raw.startswith("/"):
                raise _flag_error(
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
                raise _flag_error(
                    pod,
                    items,
                    ref.item_index,
                    f"{flag}: {path} is on volume {host.volume!r} ({host.kind}), not a "
                    "hostPath: kubehoist can only carry files from the node",
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


def referenced_needs(pod: StaticPod, need: FileNeed, data: bytes) -> tuple[FileNeed, ...]:
    """Files a kubeconfig or component config names (they travel with it)."""
    out: list[FileNeed] = []
    if need.role is FileRole.KUBECONFIG:
        doc = kubeconfig.load(data, name=need.path)
        for ref in kubeconfig.file_fields(doc, path=need.path):
            host = pod.locate(ref.path)
            if host is None or host.host_path is None:
                continue
            out.append(
                FileNeed(
                    path=ref.path,
                    role=ref.role,
                    label=f"{ref.path} ({need.path}: {ref.field})",
                    where=f"{need.path}: {ref.field}",
                    host=host,
                    flag=need.flag,
                )
            )
    elif need.role is FileRole.COMPONENT_CONFIG:
        target = _config_kubeconfig(pod, need, data)
        if target is not None:
            host = pod.locate(target)
            if host is not None and host.host_path is not None:
                fld = ".".join(pod.component.config_kubeconfig_field)
                out.append(
                    FileNeed(
                        path=target,
                        role=FileRole.KUBECONFIG,
                        label=f"{target} ({need.path}: {fld})",
                        where=f"{need.path}: {fld}",
                        host=host,
                        flag=need.flag,
                    )
                )
    return tuple(out)


def _config_doc(need: FileNeed, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KubehoistError(f"{need.label}: not UTF-8 text") from None
    doc = load_yaml_document(text, source=need.path, what="component config")
    if not isinstance(doc, dict):
        raise KubehoistError(f"{need.path}: expected a mapping")
    return doc


def _config_kubeconfig(pod: StaticPod, need: FileNeed, data: bytes) -> str | None:
    node: Any = _config_doc(need, data)
    for key in pod.component.config_kubeconfig_field:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(need.path), node))


def collect(
    pod: StaticPod, plan: NeedsPlan, *, read: Reader
) -> tuple[tuple[FileNeed, ...], dict[str, bytes]]:
    """Every need (flags first, then what their files name) and each file's bytes."""
    needs: list[FileNeed] = []
    data: dict[str, bytes] = {}
    queue = list(plan.needs)
    while queue:
        need = queue.pop(0)
        needs.append(need)
        if need.path in data:
            continue
        data[need.path] = read(need)
        queue.extend(referenced_needs(pod, need, data[need.path]))
    return tuple(needs), data


_KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]")


def secret_keys(paths: Iterable[str]) -> dict[str, str]:
    """A stable, unique Secret key per path: the basename, with parents only to break ties."""
    unique = sorted(set(paths))
    depth = dict.fromkeys(unique, 1)

    def candidate(path: str) -> str:
        parts = [p for p in path.split("/") if p]
        key = "-".join(parts[-depth[path] :]) or "file"
        return _KEY_CHARS.sub("_", key).lstrip(".") or "file"

    for _ in range(64):
        groups: dict[str, list[str]] = {}
        for path in unique:
            groups.setdefault(candidate(path), []).append(path)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        grew = False
        for group in clashes:
            for path in group:
                if depth[path] < len([p for p in path.split("/") if p]):
                    depth[path] += 1
                    grew = True
        if not grew:
            break
    keys: dict[str, str] = {}
    used: set[str] = set()
    for path in unique:
        key = candidate(path)
        n = 2
        base = key
        while key in used:
            key = f"{base}-{n}"
            n += 1
        used.add(key)
        keys[path] = key
    return keys


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """The pod's credentials: flag list remapped, files to carry, what to say about them."""

    items: tuple[Arg, ...]
    files: tuple[tuple[str, bytes], ...]
    """(Secret key, content) sorted by key; empty for an existing Secret."""
    keys: tuple[str, ...]
    writable_dirs: tuple[str, ...]
    ca_key_flags: tuple[str, ...]
    """Flags whose carried file is a cluster CA private key."""
    warnings: tuple[str, ...]

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for key, content in self.files:
            h.update(key.encode() + b"\0" + hashlib.sha256(content).digest())
        return h.hexdigest()


def build(
    pod: StaticPod,
    items: Sequence[Arg],
    *,
    options: RenderOptions,
    inputs: Inputs,
) -> Credentials:
    """Check and map every file; rewrite flags, kubeconfigs and component configs."""
    plan = plan_flag_needs(pod, items)
    warnings = list(plan.warnings)
    if options.secret_exists:
        needs = plan.needs
        data: dict[str, bytes] = {}
    else:

        def read(need: FileNeed) -> bytes:
            try:
                return inputs.files[need.path]
            except KeyError:
                raise KubehoistError(f"{need.label}: not gathered from the node") from None

        needs, data = collect(pod, plan, read=read)

    keys = secret_keys(n.path for n in needs)
    mounted = {path: f"{CREDENTIALS_DIR}/{key}" for path, key in keys.items()}

    contents: dict[str, bytes] = {}
    seen: set[tuple[str, FileRole]] = set()
    for need in needs:
        if (need.path, need.role) in seen or need.path not in data:
            continue
        seen.add((need.path, need.role))
        content = data[need.path]
        if need.role is FileRole.CERT:
            warnings.extend(
                pki.check_certificates(
                    content, label=need.label, now=options.now, warn_within=options.expiry_warning
                )
            )
        elif need.role is FileRole.KEY:
            pki.check_private_key(content, label=need.label)
        elif need.role is FileRole.KUBECONFIG:
            content, more = _kubeconfig(pod, need, content, mounted, options, inputs)
            warnings.extend(more)
        elif need.role is FileRole.COMPONENT_CONFIG:
            content = _component_config(pod, need, content, mounted)
        contents.setdefault(keys[need.path], content)

    new_items = list(items)
    for ref in _path_refs(pod, items):
        if isinstance(ref.role, PathKind):
            continue
        mapped = [mounted.get(posixpath.normpath(p), p) for p in ref.paths]
        if mapped == list(ref.paths):
            continue
        if ref.role is FileRole.SNI_CERT_KEY:
            value = ",".join(mapped) + (f":{ref.domains}" if ref.domains else "")
        else:
            value = mapped[0]
        new_items[ref.item_index] = ref.flag.with_value(value)

    ca_key_flags = sorted(
        {n.flag for n in needs if n.flag.lstrip("-") in pod.component.signing_key_flags}
    )
    if options.secret_exists:
        warnings.append(
            f"Secret {options.secret_name} is used as it is: it must hold the keys "
            f"{', '.join(sorted(keys.values())) or '(none)'}, and its kubeconfigs must name "
            f"files under {CREDENTIALS_DIR} and a server every node can reach"
        )
    return Credentials(
        items=tuple(new_items),
        files=tuple(sorted(contents.items())),
        keys=tuple(sorted(set(keys.values()))),
        writable_dirs=plan.writable_dirs,
        ca_key_flags=tuple(ca_key_flags),
        warnings=tuple(warnings),
    )


def _kubeconfig(
    pod: StaticPod,
    need: FileNeed,
    content: bytes,
    mounted: Mapping[str, str],
    options: RenderOptions,
    inputs: Inputs,
) -> tuple[bytes, list[str]]:
    name = need.path
    doc = kubeconfig.load(content, name=name)
    warnings: list[str] = []
    for blob in kubeconfig.embedded_data(doc, name=name):
        label = f"{name}: {blob.field}"
        if blob.role is FileRole.CERT:
            warnings.extend(
                pki.check_certificates(
                    blob.data, label=label, now=options.now, warn_within=options.expiry_warning
                )
            )
        else:
            pki.check_private_key(blob.data, label=label)
    for user in doc.get("users") or []:
        body = user.get("user") or {}
        for plugin in ("exec", "auth-provider"):
            if plugin in body:
                warnings.append(
                    f"{name}: user {user.get('name')!r} authenticates with {plugin}: the "
                    "Deployment's image must provide what it runs"
                )
    server, more = choose_server(name=name, doc=doc, options=options, inputs=inputs, pod=pod)
    warnings.extend(more)
    return (
        kubeconfig.rewrite(doc, paths=mounted, base=posixpath.dirname(name), server=server),
        warnings,
    )


def choose_server(
    *,
    name: str,
    doc: Mapping[str, Any],
    options: RenderOptions,
    inputs: Inputs,
    pod: StaticPod,
) -> tuple[str | None, list[str]]:
    """The server the pods' kubeconfig should use (None: keep), and what to say about it."""
    current = kubeconfig.current_server(doc) or kubeconfig.servers(doc)[0]
    if options.server is not None:
        if options.server == current:
            return None, [
                f"{name}: keeps server {current} (--server): it must survive the loss of any "
                "one control-plane node"
            ]
        return options.server, [f"{name}: server {current} -> {options.server} (--server)"]
    endpoint = inputs.control_plane_endpoint
    if endpoint and endpoint != current:
        return endpoint, [
            f"{name}: server {current} is one node's address; using the control-plane "
            f"endpoint {endpoint} (from {inputs.endpoint_source or 'the cluster'}) so the "
            "pods survive that node's loss; pass --server to choose another"
        ]
    if kubeconfig.is_loopback(current) and not options.host_network:
        raise KubehoistError(
            f"{name}: clusters[0].cluster.server: {current} is the node's loopback, which a "
            "Deployment pod cannot reach; pass --server with the cluster's API endpoint"
        )
    if endpoint:
        return None, [
            f"{name}: keeps server {current}, the control-plane endpoint (from "
            f"{inputs.endpoint_source or 'the cluster'})"
        ]
    return None, [
        f"{name}: keeps server {current}: if that is one node's address, losing that node "
        "cuts every replica off; pass --server with a load-balanced endpoint"
    ]


def _component_config(
    pod: StaticPod, need: FileNeed, content: bytes, mounted: Mapping[str, str]
) -> bytes:
    doc = _config_doc(need, content)
    target = _config_kubeconfig(pod, need, content)
    if target is None or target not in mounted:
        return content
    node: Any = doc
    fields = pod.component.config_kubeconfig_field
    for key in fields[:-1]:
        node = node[key]
    node[fields[-1]] = mounted[target]
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).encode()
