"""The OCI image layout archive and the docker archive: their structure, checked the
way registry tools read them, and their reproducibility (small synthetic layers)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from kubehoist.errors import KubehoistError
from kubehoist.image.archive import read_archive, write_image, write_oci_archive
from kubehoist.image.cache import cached_gzip
from kubehoist.image.config import ImageConfig
from kubehoist.image.layers import (
    Layer,
    directory,
    file_data,
    gzip_layer,
    layer_tar,
    symlink,
    tree_of,
    write_layer,
)
from tests.unit.imagefiles import check_oci_layout, layer_members, open_archive, sha256

NAME = "ghcr.io/kubehoist/kubehoist:9.9.9"
CONFIG = ImageConfig(env=("PATH=/usr/bin",), entrypoint=("kubehoist",), labels=(("a", "b"),))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


def synthetic_layers(tmp_path: Path, payload: bytes) -> list[Layer]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = write_layer(
        [directory("usr/bin"), symlink("bin", "usr/bin"), file_data("usr/bin/python3", payload)],
        tmp_path / "base.tar",
    )
    top = write_layer(
        [file_data("usr/local/bin/kubehoist", b"#!/usr/bin/python3\n", 0o755)],
        tmp_path / "top.tar",
        lower_dirs={"usr"},
    )
    return [base, top]


def build(tmp_path: Path, dest: Path, payload: bytes, *, compress: bool = True) -> str:
    layers = synthetic_layers(tmp_path, payload)
    if compress:
        layers = [cached_gzip(layers[0]), gzip_layer(layers[1], tmp_path / "top.tar.gz")]
    return write_oci_archive(dest, NAME, CONFIG, layers)


def test_the_same_layers_give_the_same_bytes_and_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = os.urandom(300_000)
    digests, contents = [], []
    for n in range(2):
        monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / f"cache{n}"))
        dest = tmp_path / f"out{n}.oci.tar"
        digests.append(build(tmp_path / f"work{n}", dest, payload))
        contents.append(dest.read_bytes())
    assert digests[0] == digests[1] and digests[0].startswith("sha256:")
    assert contents[0] == contents[1]
    other = build(tmp_path / "work2", tmp_path / "other.oci.tar", payload + b"!")
    assert other != digests[0]


def test_the_archive_is_a_valid_oci_image_layout(tmp_path: Path) -> None:
    dest = tmp_path / "image.oci.tar"
    digest = build(tmp_path / "work", dest, b"python")
    layout = check_oci_layout(dest)
    (entry,) = layout["index"]["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"] == {
        "io.containerd.image.name": NAME,
        "org.opencontainers.image.ref.name": "9.9.9",
    }
    assert [d["mediaType"] for d in layout["manifest"]["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 2
    assert layout["config"]["architecture"] == "amd64" and layout["config"]["os"] == "linux"
    assert layout["config"]["config"] == {
        "Env": ["PATH=/usr/bin"],
        "Entrypoint": ["kubehoist"],
        "Labels": {"a": "b"},
    }
    members = layout["members"]
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})
    assert layer_members(layout["layers"][0])["usr/bin/python3"].size == len(b"python")
    assert sorted(layer_members(layout["layers"][1])) == [
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/kubehoist",
    ]


def test_uncompressed_layers_are_plain_tar(tmp_path: Path) -> None:
    dest = tmp_path / "image.oci.tar"
    build(tmp_path / "work", dest, b"python", compress=False)
    layout = check_oci_layout(dest)
    assert {d["mediaType"] for d in layout["manifest"]["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar"
    }


def test_read_archive_reads_either_format_with_the_same_image_id(tmp_path: Path) -> None:
    layers = synthetic_layers(tmp_path / "work", b"python")
    docker = write_image(tmp_path / "d.tar", NAME, CONFIG, layers, "docker")
    gz = [gzip_layer(layer, tmp_path / f"{n}.gz") for n, layer in enumerate(layers)]
    oci = write_image(tmp_path / "o.tar", NAME, CONFIG, gz, "oci")
    assert (docker.format, oci.format) == ("docker", "oci")
    assert docker.names == oci.names == (NAME,)
    assert docker.image_id == oci.image_id  # the same config JSON
    assert (
        docker.digest is None
        and oci.digest == check_oci_layout(oci.path)["index"]["manifests"][0]["digest"]
    )
    assert oci.config == docker.config == CONFIG
    assert [layer.diff_id for layer in oci.layers] == [layer.diff_id for layer in docker.layers]
    assert all(layer.gzip for layer in oci.layers) and not any(d.gzip for d in docker.layers)
    # an OCI archive's gzip layers read back, through the archive, as the same trees
    assert tree_of(oci.layers) == tree_of(docker.layers)
    with layer_tar(oci.layers[0]) as tar:
        assert "usr/bin/python3" in [m.name for m in tar]
    assert open_archive(docker.path).entry["RepoTags"] == [NAME]
    with pytest.raises(KubehoistError, match="uncompressed layers"):
        write_image(tmp_path / "x.tar", NAME, CONFIG, gz, "docker")


def test_gzip_is_deterministic_and_cached_by_diff_id(tmp_path: Path, cache: Path) -> None:
    (layer, _) = synthetic_layers(tmp_path / "work", os.urandom(50_000))
    one = gzip_layer(layer, tmp_path / "one.gz")
    two = gzip_layer(layer, tmp_path / "two.gz")
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.digest == f"sha256:{sha256(one.path.read_bytes())}" and one.diff_id == layer.diff_id
    assert gzip.decompress(one.path.read_bytes()) == layer.path.read_bytes()
    cached = cached_gzip(layer)
    assert cached.path.parent == cache and cached.digest == one.digest
    mtime = cached.path.stat().st_mtime_ns
    assert cached_gzip(layer) == cached and cached.path.stat().st_mtime_ns == mtime


def test_broken_archives_are_one_line_errors(tmp_path: Path) -> None:
    dest = tmp_path / "image.oci.tar"
    build(tmp_path / "work", dest, b"python")
    with tarfile.open(dest) as tar, tarfile.open(tmp_path / "bad.tar", "w") as out:
        for m in tar.getmembers():
            fh = tar.extractfile(m) if m.isfile() else None
            if fh is not None and m.name.startswith("blobs/sha256/") and m.size < 2000:
                data = fh.read().replace(b"amd64", b"arm64")
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
            else:
                out.addfile(m, fh)
    with pytest.raises(KubehoistError, match=r"bad.tar: blob sha256:\w+ corrupt") as err:
        read_archive(tmp_path / "bad.tar")
    assert "\n" not in err.value.message
