"""The thin non-pure edge of render: read the node's files in, write rendered files out.

`gather_inputs` reads exactly the files the renderer will need (the files the flags
name, then the files those kubeconfigs and component configs name) from under a host
root, plus admin.conf to learn the cluster's control-plane endpoint, and returns their
bytes as `Inputs`. `write_output_dir` writes rendered objects and the image build
context. All decisions stay in the pure `kubehoist.render`.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from kubehoist.errors import KubehoistError
from kubehoist.manifest import StaticPod
from kubehoist.render import (
    FileNeed,
    Inputs,
    Rendered,
    RenderOptions,
    collect,
    dump,
    plan_flag_needs,
    plan_flags,
)
from kubehoist.render import kubeconfig as kubeconfig_model

ENDPOINT_KUBECONFIGS = ("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf")
"""kubeadm writes these with the controlPlaneEndpoint (the component kubeconfigs it
writes point at the node's own address instead)."""

_MAX_LINKS = 40
MAX_FILE_BYTES = 4 * 1024 * 1024
"""The most render reads of one file (a Secret holds 1 MiB in all)."""


def _file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


@dataclass(frozen=True, kw_only=True)
class HostRoot:
    """Files of a node as seen under `root` (/ on the node itself, or a mounted copy)."""

    root: Path

    def path(self, node_path: str) -> Path:
        """The local path of `node_path`, following symlinks inside the root."""
        current = posixpath.normpath("/" + node_path.lstrip("/"))
        for _ in range(_MAX_LINKS):
            local = self.root / current.lstrip("/")
            parts = current.strip("/").split("/")
            resolved = None
            for i in range(1, len(parts) + 1):
                prefix = "/" + "/".join(parts[:i])
                candidate = self.root / prefix.lstrip("/")
                if candidate.is_symlink():
                    target = os.readlink(candidate)
                    base = posixpath.dirname(prefix)
                    new_prefix = target if target.startswith("/") else posixpath.join(base, target)
                    rest = "/".join(parts[i:])
                    resolved = posixpath.normpath(posixpath.join(new_prefix, rest))
                    break
            if resolved is None:
                return local
            current = resolved
        raise OSError(errno.ELOOP, "too many levels of symbolic links", node_path)

    def read(self, node_path: str) -> bytes:
        """A regular file's bytes, at most MAX_FILE_BYTES of them. Opened without
        blocking and checked before reading, so a FIFO, a socket or a device (a path
        an unknown flag names may be any of these) is refused, never read."""
        local = self.path(node_path)
        mode = local.stat().st_mode  # a socket cannot even be opened
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"is {_file_type(mode)}, not a file", node_path)
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(errno.EINVAL, f"is {_file_type(mode)}, not a file", node_path)
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes", node_path)
        return data

    def shown(self, node_path: str) -> str:
        if str(self.root) in ("/", ""):
            return node_path
        return f"{self.root}{node_path}"


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied (run as root on the node?)"
    return exc.strerror or type(exc).__name__


def gather_inputs(pod: StaticPod, options: RenderOptions, *, host_root: Path) -> Inputs:
    """Read every file `render(pod, options, ...)` will need from under `host_root`."""
    if options.secret_exists:
        return Inputs()
    root = HostRoot(root=host_root)
    flag_plan = plan_flags(pod, options)
    plan = plan_flag_needs(pod, flag_plan.items)

    def read(need: FileNeed) -> bytes:
        node_path = need.host.host_path
        assert node_path is not None
        try:
            return root.read(node_path)
        except OSError as exc:
            raise KubehoistError(
                f"{need.where}: {need.flag} {need.path}: cannot read {root.shown(node_path)}: "
                f"{_reason(exc)}"
            ) from None

    _, files = collect(pod, plan, read=read)
    endpoint, source = control_plane_endpoint(root)
    return Inputs(files=files, control_plane_endpoint=endpoint, endpoint_source=source)


def control_plane_endpoint(root: HostRoot) -> tuple[str | None, str | None]:
    """The API endpoint kubeadm gave admin.conf, if the node has one that parses."""
    for path in ENDPOINT_KUBECONFIGS:
        try:
            data = root.read(path)
            doc = kubeconfig_model.load(data, name=path)
        except (OSError, KubehoistError):
            continue
        server = kubeconfig_model.current_server(doc)
        if server:
            return server, path
    return None, None


def write_output_dir(directory: Path, rendered: Rendered, *, output: str) -> tuple[Path, ...]:
    """Write each object to its own file and the image build context; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ext = "json" if output == "json" else "yaml"
    for i, obj in enumerate(rendered.objects):
        kind = str(obj.get("kind", "object")).lower()
        name = str(obj.get("metadata", {}).get("name", "unnamed"))
        path = directory / f"{i:02d}-{kind}-{name}.{ext}"
        _write(path, dump([obj], output=output).encode(), mode=0o600)
        written.append(path)
    context = rendered.image_context
    if context is not None:
        image_dir = directory / "image"
        image_dir.mkdir(mode=0o700, exist_ok=True)
        _write(image_dir / "Dockerfile", context.dockerfile.encode(), mode=0o644)
        written.append(image_dir / "Dockerfile")
        for rel, content in context.files:
            path = image_dir / rel
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write(path, content, mode=0o400)
            written.append(path)
    return tuple(written)


def _write(path: Path, content: bytes, *, mode: int) -> None:
    if path.exists():
        path.chmod(0o600)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    path.chmod(mode)
