"""Image archives, written so that the same inputs give the same bytes:

- the OCI image layout archive (`oci-layout`, `index.json`, `blobs/sha256/<hex>`),
  what registry tools read (`skopeo copy oci-archive:…`, `podman load`,
  `ctr images import`, `docker load` since Docker 25); its one manifest's digest is
  the image's digest once pushed, whatever the registry;
- the docker archive (`manifest.json` with Config, RepoTags and Layers, the config
  named by its digest, one `<diff_id>/layer.tar` per layer), what `docker save` writes.

Both hold the same config JSON, so an image has the same image id (the config's
digest) in either. Members are sorted, mtime 0, owner 0:0, GNU headers.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from kubehoist.errors import KubehoistError
from kubehoist.image.config import ARCHITECTURE, OS, ImageConfig, canonical_json, tag_of
from kubehoist.image.layers import Layer, open_blob, tarinfo

Format = Literal["oci", "docker"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)

LAYOUT_VERSION: Final = "1.0.0"
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar"
GZIP_LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_MEDIA_TYPES: Final = {
    "application/vnd.docker.image.rootfs.diff.tar": False,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": True,
}
REF_NAME: Final = "org.opencontainers.image.ref.name"
"""The tag, as the OCI image layout has it (and `docker save`, `ctr export` write)."""
IMAGE_NAME: Final = "io.containerd.image.name"
"""The full name, which containerd, podman and Docker take before REF_NAME."""


@dataclass(frozen=True)
class Archive:
    """What an image archive holds."""

    path: Path
    format: Format
    names: tuple[str, ...]
    image_id: str  # sha256:<hex of the config JSON>
    digest: str | None  # sha256:<hex of the manifest> (OCI; a docker archive has none)
    config: ImageConfig
    layers: tuple[Layer, ...]
    size: int


# --- writing --------------------------------------------------------------------------


def _write_tar(dest: Path, members: Mapping[str, bytes | Layer], dirs: Sequence[str] = ()) -> None:
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted([*dirs, *members]):
            if path in dirs:
                tar.addfile(tarinfo(path, tarfile.DIRTYPE, 0o755, 0, 0))
                continue
            info = tarinfo(path, tarfile.REGTYPE, 0o644, 0, 0)
            content = members[path]
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            info.size = content.size
            with open_blob(content) as fh:
                tar.addfile(info, fh)


def _config_bytes(config: ImageConfig, layers: Sequence[Layer]) -> bytes:
    return canonical_json(config.document([layer.diff_id for layer in layers]))


def write_archive(dest: Path, name: str, config: ImageConfig, layers: Sequence[Layer]) -> str:
    """Write a docker archive of one image at `dest`; returns its image id (`sha256:`
    of the config JSON, what `crictl images` shows as IMAGE ID)."""
    config_bytes = _config_bytes(config, layers)
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_paths = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers]
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [name], "Layers": layer_paths}]
    members: dict[str, bytes | Layer] = {
        f"{config_hex}.json": config_bytes,
        "manifest.json": canonical_json(manifest),
    }
    members.update(zip(layer_paths, layers, strict=True))
    _write_tar(dest, members)
    return f"sha256:{config_hex}"


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _blob_path(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def write_oci_archive(dest: Path, name: str, config: ImageConfig, layers: Sequence[Layer]) -> str:
    """Write an OCI image layout archive of one image (`name` a normalized name) at
    `dest`; returns the manifest's digest."""
    config_bytes = _config_bytes(config, layers)
    blobs: dict[str, bytes | Layer] = {}

    def blob(data: bytes) -> str:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        blobs[_blob_path(digest)] = data
        return digest

    layer_descriptors = []
    for layer in layers:
        blobs[_blob_path(layer.blob_digest)] = layer
        media_type = GZIP_LAYER_MEDIA_TYPE if layer.gzip else LAYER_MEDIA_TYPE
        layer_descriptors.append(_descriptor(media_type, layer.blob_digest, layer.size))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": _descriptor(CONFIG_MEDIA_TYPE, blob(config_bytes), len(config_bytes)),
            "layers": layer_descriptors,
        }
    )
    digest = blob(manifest)
    entry = _descriptor(MANIFEST_MEDIA_TYPE, digest, len(manifest))
    entry["platform"] = {"architecture": ARCHITECTURE, "os": OS}
    entry["annotations"] = {IMAGE_NAME: name, REF_NAME: tag_of(name)}
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [entry]}
    members: dict[str, bytes | Layer] = {
        "oci-layout": canonical_json({"imageLayoutVersion": LAYOUT_VERSION}),
        "index.json": canonical_json(index),
        **blobs,
    }
    _write_tar(dest, members, dirs=("blobs", "blobs/sha256"))
    return digest


def write_image(
    dest: Path, name: str, config: ImageConfig, layers: Sequence[Layer], fmt: Format
) -> Archive:
    """Write an archive of either format; what it holds, read back."""
    if fmt == "oci":
        write_oci_archive(dest, name, config, layers)
    else:
        if any(layer.gzip for layer in layers):
            raise KubehoistError(f"{dest}: the docker archive takes uncompressed layers")
        write_archive(dest, name, config, layers)
    return read_archive(dest)


# --- reading --------------------------------------------------------------------------


def read_archive(path: Path) -> Archive:
    """Read a one-image archive of either format (any docker archive or OCI layout
    archive of one manifest, not only ours)."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            if "oci-layout" in members:
                return _read_oci(path, tar, members)
            return _read_docker(path, tar, members)
    except (OSError, tarfile.TarError, ValueError, KeyError, TypeError) as exc:
        raise KubehoistError(f"image archive {path}: unreadable: {exc}") from exc


def _read_docker(
    path: Path, tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]
) -> Archive:
    manifest = json.loads(_member_bytes(tar, members, "manifest.json"))
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise KubehoistError(f"image archive {path}: manifest.json must list one image")
    entry = manifest[0]
    config_bytes = _member_bytes(tar, members, entry["Config"])
    doc = json.loads(config_bytes)
    diff_ids = doc["rootfs"]["diff_ids"]
    if len(diff_ids) != len(entry["Layers"]):
        raise KubehoistError(f"image archive {path}: diff_ids and Layers differ in length")
    layers = []
    for layer_path, diff_id in zip(entry["Layers"], diff_ids, strict=True):
        m = members.get(layer_path)
        if m is None or not m.isfile():
            raise KubehoistError(f"image archive {path}: no layer {layer_path}")
        fh = tar.extractfile(m)
        assert fh is not None
        if fh.read(2) == b"\x1f\x8b":  # gzip, as `docker load` takes it too
            fh.seek(0)
            h = hashlib.sha256()
            while chunk := fh.read(1 << 20):
                h.update(chunk)
            digest = f"sha256:{h.hexdigest()}"
            layers.append(Layer(path, m.offset_data, m.size, str(diff_id), digest, gzip=True))
        else:
            layers.append(Layer(path, m.offset_data, m.size, str(diff_id)))
    return Archive(
        path=path,
        format="docker",
        names=tuple(str(n) for n in entry.get("RepoTags") or ()),
        image_id=f"sha256:{hashlib.sha256(config_bytes).hexdigest()}",
        digest=None,
        config=ImageConfig.from_document(doc),
        layers=tuple(layers),
        size=path.stat().st_size,
    )


def _read_oci(path: Path, tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> Archive:
    layout = json.loads(_member_bytes(tar, members, "oci-layout"))
    if layout.get("imageLayoutVersion") != LAYOUT_VERSION:
        raise KubehoistError(f"image archive {path}: OCI layout version is not {LAYOUT_VERSION}")
    index = json.loads(_member_bytes(tar, members, "index.json"))
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or len(manifests) != 1:
        raise KubehoistError(f"image archive {path}: index.json must list one manifest")
    entry = manifests[0]
    if entry.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise KubehoistError(f"image archive {path}: {entry.get('mediaType')}: not an image")

    def blob(descriptor: Mapping[str, Any]) -> bytes:
        data = _member_bytes(tar, members, _blob_path(str(descriptor["digest"])))
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != descriptor["digest"]:
            raise KubehoistError(f"image archive {path}: blob {descriptor['digest']} corrupt")
        return data

    digest = str(entry["digest"])
    manifest = json.loads(blob(entry))
    config_bytes = blob(manifest["config"])
    doc = json.loads(config_bytes)
    diff_ids = doc["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["layers"]):
        raise KubehoistError(f"image archive {path}: diff_ids and layers differ in length")
    layers = []
    for descriptor, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        media_type = descriptor["mediaType"]
        gz = media_type == GZIP_LAYER_MEDIA_TYPE or DOCKER_LAYER_MEDIA_TYPES.get(media_type)
        if media_type not in (LAYER_MEDIA_TYPE, GZIP_LAYER_MEDIA_TYPE, *DOCKER_LAYER_MEDIA_TYPES):
            raise KubehoistError(f"image archive {path}: layer of type {media_type}")
        m = members.get(_blob_path(descriptor["digest"]))
        if m is None or not m.isfile() or m.size != descriptor["size"]:
            raise KubehoistError(f"image archive {path}: no layer {descriptor['digest']}")
        layers.append(
            Layer(path, m.offset_data, m.size, str(diff_id), str(descriptor["digest"]), bool(gz))
        )
    annotations = entry.get("annotations") or {}
    name = annotations.get(IMAGE_NAME) or annotations.get(REF_NAME)
    return Archive(
        path=path,
        format="oci",
        names=(str(name),) if name else (),
        image_id=str(manifest["config"]["digest"]),
        digest=digest,
        config=ImageConfig.from_document(doc),
        layers=tuple(layers),
        size=path.stat().st_size,
    )


def _member_bytes(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str) -> bytes:
    m = members.get(name)
    fh = tar.extractfile(m) if m is not None else None
    if fh is None:
        raise KeyError(f"no {name}")
    return fh.read()
