"""Image layers: tar files written by our own code so that the same entries give the
same bytes (sorted entries, mtime 0, owner 0:0 unless told otherwise, empty user and
group names, GNU headers without PAX times), their digests, their deterministic gzip
form, and what a stack of them holds (directories and symlinks)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from kubehoist.errors import KubehoistError

GZIP_LEVEL: Final = 6
"""The compression level of gzip layers: fixed, since the bytes (and so the digests)
depend on it."""

DIR: Final = "dir"
FILE: Final = "file"
SYMLINK: Final = "symlink"


@dataclass(frozen=True)
class Entry:
    """One path of a layer. `path` is relative to the image's `/` (no leading slash);
    a file's content comes from `source` (a host file) or `data`."""

    path: str
    kind: str  # DIR, FILE or SYMLINK
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    source: Path | None = None
    data: bytes | None = None
    link: str = ""


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), DIR, mode, uid, gid)


def file_data(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), FILE, mode, uid, gid, data=data)


def file_from(path: str, source: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), FILE, mode, uid, gid, source=source)


def symlink(path: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), SYMLINK, 0o777, uid, gid, link=target)


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise KubehoistError(f"layer path {path!r}: not a path below /")
    return "/".join(parts)


@dataclass(frozen=True)
class Layer:
    """A layer tar: `size` bytes at `offset` of `path` (a layer file of its own, or a
    member of an image archive), uncompressed or gzip. `diff_id` is `sha256:<hex>` of
    the uncompressed tar, `digest` that of the bytes as stored (the same when
    uncompressed)."""

    path: Path
    offset: int
    size: int
    diff_id: str
    digest: str = ""
    gzip: bool = False

    @property
    def blob_digest(self) -> str:
        return self.digest or self.diff_id


def tarinfo(name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode & 0o7777
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def write_layer(entries: Iterable[Entry], dest: Path, *, lower_dirs: Collection[str] = ()) -> Layer:
    """Write entries as a layer tar at `dest`. A later entry for the same path wins;
    missing parent directories are added (0755, root) unless `lower_dirs` (directories
    of the layers below) has them, so that their mode and owner stay as they are."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        by_path[entry.path] = entry
    for path in list(by_path):
        for parent in parents(path):
            if parent not in by_path and parent not in lower_dirs:
                by_path[parent] = directory(parent)
            elif parent in by_path and by_path[parent].kind != DIR:
                raise KubehoistError(f"layer {dest}: {parent} is not a directory but has {path}")
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(by_path):
            e = by_path[path]
            if e.kind == DIR:
                tar.addfile(tarinfo(path, tarfile.DIRTYPE, e.mode, e.uid, e.gid))
            elif e.kind == SYMLINK:
                info = tarinfo(path, tarfile.SYMTYPE, 0o777, e.uid, e.gid)
                info.linkname = e.link
                tar.addfile(info)
            elif e.data is not None:
                info = tarinfo(path, tarfile.REGTYPE, e.mode, e.uid, e.gid)
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            elif e.source is not None:
                info = tarinfo(path, tarfile.REGTYPE, e.mode, e.uid, e.gid)
                try:
                    with open(e.source, "rb") as fh:
                        info.size = os.fstat(fh.fileno()).st_size
                        tar.addfile(info, fh)
                except OSError as exc:
                    raise KubehoistError(f"{e.source}: cannot read: {exc.strerror}") from exc
            else:
                raise KubehoistError(f"layer {dest}: {path} has no content")
    return layer_of(dest)


def layer_of(path: Path) -> Layer:
    """A whole file taken as a layer."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return Layer(path=path, offset=0, size=path.stat().st_size, diff_id=f"sha256:{digest}")


def sha256_file(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    try:
        with open(path, "rb") as fh:
            return f"sha256:{hashlib.file_digest(fh, 'sha256').hexdigest()}"
    except OSError as exc:
        raise KubehoistError(f"{path}: cannot read: {exc.strerror}") from exc


def gzip_layer(layer: Layer, dest: Path) -> Layer:
    """`layer` gzipped into `dest`, the same bytes for the same layer: no file name,
    mtime 0, level GZIP_LEVEL (with the same zlib)."""
    if layer.gzip:
        raise KubehoistError(f"layer {layer.path}: already compressed")
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz,
        open_blob(layer) as src,
    ):
        while chunk := src.read(1 << 20):
            gz.write(chunk)
    return Layer(dest, 0, dest.stat().st_size, layer.diff_id, sha256_file(dest), gzip=True)


class _Section(io.RawIOBase):
    """`size` bytes of an open file from `offset` on, as a file of their own."""

    def __init__(self, fh: IO[bytes], offset: int, size: int) -> None:
        self._fh, self._left = fh, size
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)[: self._left]
        n = self._fh.readinto(view)  # type: ignore[attr-defined]
        self._left -= n
        return int(n)


@contextmanager
def open_blob(layer: Layer) -> Iterator[IO[bytes]]:
    """The layer's bytes as stored."""
    with open(layer.path, "rb") as fh:
        yield io.BufferedReader(_Section(fh, layer.offset, layer.size))


@contextmanager
def layer_tar(layer: Layer) -> Iterator[tarfile.TarFile]:
    """The layer's tar, read in order (a gzip layer is decompressed on the way)."""
    with open_blob(layer) as blob:
        if not layer.gzip:
            with tarfile.open(fileobj=blob, mode="r|") as tar:
                yield tar
            return
        with (
            gzip.GzipFile(fileobj=blob, mode="rb") as gz,
            tarfile.open(fileobj=gz, mode="r|") as tar,
        ):
            yield tar


def tree_entries(
    root: Path, target: str, *, owner: tuple[int, int] | None, mode: int | None
) -> list[Entry]:
    """Entries for everything below host directory `root`, placed below `target`;
    symlinks stay symlinks, modes are kept unless `mode` is given."""
    uid, gid = owner or (0, 0)
    out: list[Entry] = []
    for path in sorted(root.rglob("*")):
        dest = f"{target}/{path.relative_to(root).as_posix()}"
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out.append(symlink(dest, os.readlink(path), uid, gid))
        elif stat.S_ISDIR(st.st_mode):
            out.append(directory(dest, mode if mode is not None else st.st_mode, uid, gid))
        elif stat.S_ISREG(st.st_mode):
            out.append(file_from(dest, path, mode if mode is not None else st.st_mode, uid, gid))
        else:
            raise KubehoistError(f"{path}: not a file, directory or symlink")
    return out


def normalize_rootfs(src: Path, dest: Path) -> None:
    """Copy a root filesystem tarball as a layer: names without `./`, mtime 0, no PAX
    headers, nothing below /dev (the runtime mounts its own /dev)."""
    gnu = tarfile.GNU_FORMAT
    with tarfile.open(src, "r:*") as tin, tarfile.open(dest, "w", format=gnu) as tout:
        for m in tin:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or name == "." or name.startswith("dev/"):
                continue
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                continue
            info = tarinfo(name, m.type, m.mode, m.uid, m.gid)
            info.linkname = m.linkname.removeprefix("./") if m.islnk() else m.linkname
            if m.isfile():
                info.size = m.size
                tout.addfile(info, tin.extractfile(m))
            else:
                tout.addfile(info)


@dataclass(frozen=True)
class Tree:
    """Directories and symlinks of an image's layers, to place new files the way
    Docker does (following the base's symlinked directories such as /bin -> usr/bin)."""

    dirs: frozenset[str]
    links: Mapping[str, str]

    def resolve(self, path: str) -> str:
        """`path` (absolute) with symlinks resolved as inside the image (chroot)."""
        todo = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            target = self.links.get(candidate)
            if target is None:
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                raise KubehoistError(f"{path}: too many levels of symlinks in the base image")
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
        return "/".join(done)


def tree_of(layers: Iterable[Layer]) -> Tree:
    dirs: set[str] = set()
    links: dict[str, str] = {}
    for layer in layers:
        with layer_tar(layer) as tar:
            for m in tar:
                name = m.name.removeprefix("./").strip("/")
                base = name.rsplit("/", 1)[-1]
                if base.startswith(".wh."):
                    continue
                dirs.discard(name)
                links.pop(name, None)
                if m.isdir():
                    dirs.add(name)
                elif m.issym():
                    links[name] = m.linkname
    return Tree(frozenset(dirs), links)
