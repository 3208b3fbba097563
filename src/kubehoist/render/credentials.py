"""Which files the pod needs, under which Secret keys, with which bytes.

From the final flag list this module finds every file the component reads (flags, see
`needs`, then the files the kubeconfigs and component config name), checks each one (PEM
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubehoist.components import FileRole, PathKind
from kubehoist.constants import CREDENTIALS_DIR
from kubehoist.errors import KubehoistError
from kubehoist.manifest import Arg, StaticPod
from kubehoist.render import componentconfig, kubeconfig, pki
from kubehoist.render.needs import FileNeed, NeedsPlan, Reader, path_refs, plan_flag_needs
from kubehoist.render.options import Inputs, RenderOptions
from kubehoist.safeyaml import load_all

__all__ = [
    "Credentials",
    "FileNeed",
    "NeedsPlan",
    "Reader",
    "build",
    "choose_server",
    "collect",
    "plan_flag_needs",
    "referenced_needs",
    "secret_keys",
    "sniff_role",
]

MAX_FILES = 256
"""More files than any component reads: a bound on following what files name."""


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
        out.extend(componentconfig.referenced(pod, need, data))
    return tuple(out)


def sniff_role(data: bytes) -> FileRole:
    """What a found file is, by its bytes: a certificate (bundle), a private key, a
    kubeconfig, or else an opaque file (PEM with both a certificate and a key too)."""
    has_cert = b"-----BEGIN CERTIFICATE-----" in data
    has_key = b"PRIVATE KEY-----" in data
    if has_cert and has_key:
        return FileRole.OPAQUE
    if has_cert or has_key:
        return FileRole.CERT if has_cert else FileRole.KEY
    try:
        docs = load_all(data.decode("utf-8"), source="(found file)")
    except (UnicodeDecodeError, KubehoistError):
        return FileRole.OPAQUE
    if len(docs) == 1 and isinstance(docs[0], dict):
        doc = docs[0]
        if doc.get("kind") == "Config" and isinstance(doc.get("clusters"), list):
            return FileRole.KUBECONFIG
    return FileRole.OPAQUE


def collect(
    pod: StaticPod, plan: NeedsPlan, *, read: Reader
) -> tuple[tuple[FileNeed, ...], dict[str, bytes]]:
    """Every need (flags first, then what their files name) and each file's bytes."""
    needs: list[FileNeed] = []
    data: dict[str, bytes] = {}
    queue = list(plan.needs)
    while queue:
        need = queue.pop(0)
        if need.path not in data:
            data[need.path] = read(need)
        if need.role is FileRole.FOUND:
            need = replace(need, role=sniff_role(data[need.path]))
        needs.append(need)
        if len(needs) > MAX_FILES:
            raise KubehoistError(
                f"{need.where}: {need.flag}: more than {MAX_FILES} files to carry; refusing"
            )
        if not any(n.path == need.path and n.role is need.role for n in needs[:-1]):
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
            content = componentconfig.rewrite(pod, need, content, mounted)
        contents.setdefault(keys[need.path], content)

    new_items = list(items)
    for ref in path_refs(pod, items):
        if isinstance(ref.role, PathKind):
            continue
        mapped = [mounted.get(posixpath.normpath(p), p) for p in ref.paths]
        if mapped != list(ref.paths):
            new_items[ref.item_index] = ref.flag.with_value(ref.value_with(mapped))

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
