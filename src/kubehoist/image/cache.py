"""The image cache (`~/.cache/kubehoist/images`, or `$KUBEHOIST_CACHE/images`): what
is built once per machine, keyed by a hash of its inputs, under a file lock and
renamed into place, so that concurrent builds share it and a failed one leaves
nothing behind."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kubehoist.cachedir import cache_root, locked
from kubehoist.errors import KubehoistError
from kubehoist.image.config import canonical_json
from kubehoist.image.layers import GZIP_LEVEL, Layer, gzip_layer, sha256_file

FORMAT: Final = 1
"""Bumped whenever the writers' output changes, so that cached archives are rebuilt."""


def images_cache() -> Path:
    return cache_root() / "images"


def safe(name: str) -> str:
    """An image name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def key(*parts: object) -> str:
    return hashlib.sha256(canonical_json([FORMAT, *parts])).hexdigest()[:20]


def file_digest(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise KubehoistError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, made by `build(tmp)` under a lock and renamed into place unless present."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with locked(dest.parent / f".{dest.name}.lock"):
        if dest.exists():  # another build finished while we waited
            return dest
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            build(tmp)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch directory in the cache (on its file system: results are renamed)."""
    images_cache().mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=images_cache()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class Recipe:
    """How to build one image archive, and where the cache keeps it."""

    name: str
    key: str
    make: Callable[[Path], None] = field(compare=False, repr=False)
    suffix: str = ".tar"  # ".oci.tar" for an OCI layout archive

    @property
    def archive(self) -> Path:
        return images_cache() / f"{safe(self.name)}-{self.key}{self.suffix}"

    def ensure(self) -> Path:
        """The archive, built unless the cache has it; archives of older keys of the
        same name are removed once they are an hour old (a running import may still
        read a younger one)."""
        if self.archive.exists():
            return self.archive
        build_once(self.archive, self.make)
        prune(self.archive, f"{safe(self.name)}-", self.suffix)
        return self.archive


def prune(keep: Path, prefix: str, suffix: str) -> None:
    """Remove the cache's other `<prefix><key><suffix>` files (older keys of what
    `keep` is) once they are an hour old."""
    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{20}" + re.escape(suffix))
    for old in keep.parent.iterdir():
        if old == keep or not pattern.fullmatch(old.name):
            continue
        try:
            if time.time() - old.stat().st_mtime > 3600:
                old.unlink()
                old.with_name(f".{old.name}.lock").unlink(missing_ok=True)
        except FileNotFoundError:
            pass


def cached_gzip(layer: Layer) -> Layer:
    """The gzip form of a layer, kept in the cache next to it (keyed by its diff_id),
    so that a base layer is compressed once."""
    hexdigest = layer.diff_id.removeprefix("sha256:")
    dest = images_cache() / f"layer-{hexdigest[:40]}.gz{GZIP_LEVEL}"

    def make(tmp: Path) -> None:
        gzip_layer(layer, tmp)

    build_once(dest, make)
    return Layer(dest, 0, dest.stat().st_size, layer.diff_id, sha256_file(dest), gzip=True)
