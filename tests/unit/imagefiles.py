"""Reading image archives and layers back in tests, and small files to build from."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def executable(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(0o755)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Opened:
    """A one-image archive, read back with tarfile."""

    entry: dict[str, Any]  # its manifest.json entry
    config_bytes: bytes
    config: dict[str, Any]
    layers: list[bytes]
    members: list[tarfile.TarInfo]


def open_archive(path: Path) -> Opened:
    with tarfile.open(path) as tar:

        def read(name: str) -> bytes:
            fh = tar.extractfile(name)
            assert fh is not None
            return fh.read()

        (entry,) = json.loads(read("manifest.json"))
        config_bytes = read(entry["Config"])
        layers = [read(p) for p in entry["Layers"]]
        return Opened(entry, config_bytes, json.loads(config_bytes), layers, tar.getmembers())


def layer_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def layer_file(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def check_oci_layout(path: Path) -> dict[str, Any]:
    """Check an OCI image layout archive of one image the way a registry tool would
    read it; returns {index, manifest, config, layers (uncompressed), members}."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        files = {m.name: m for m in members if m.isfile()}

        def read(name: str) -> bytes:
            fh = tar.extractfile(files[name])
            assert fh is not None
            return fh.read()

        assert json.loads(read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        blobs = {n for n in files if n.startswith("blobs/")}
        for name in blobs:  # every blob is named by its content's digest
            assert name == f"blobs/sha256/{sha256(read(name))}"
        index = json.loads(read("index.json"))
        assert index["schemaVersion"] == 2
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        (entry,) = index["manifests"]

        def blob(descriptor: dict[str, Any]) -> bytes:
            data = read(f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}")
            assert descriptor["digest"] == f"sha256:{sha256(data)}"
            assert descriptor["size"] == len(data)
            return data

        assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
        manifest = json.loads(blob(entry))
        assert manifest["schemaVersion"] == 2
        assert manifest["mediaType"] == entry["mediaType"]
        assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        config = json.loads(blob(manifest["config"]))
        layers = []
        for descriptor in manifest["layers"]:
            data = blob(descriptor)
            if descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip":
                assert data[:2] == b"\x1f\x8b" and data[4:8] == bytes(4)  # gzip, mtime 0
                data = gzip.decompress(data)
            else:
                assert descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            layers.append(data)
        assert config["rootfs"] == {
            "type": "layers",
            "diff_ids": [f"sha256:{sha256(d)}" for d in layers],
        }
        referenced = {entry["digest"], manifest["config"]["digest"]}
        referenced |= {d["digest"] for d in manifest["layers"]}
        assert blobs == {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in referenced}
        return {
            "index": index,
            "manifest": manifest,
            "config": config,
            "layers": layers,
            "members": members,
        }
