"""The image table, the lab image store and Dockerfile planning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubehoist.lab.binaries import Binaries
from kubehoist.lab.kubelet import images
from kubehoist.lab.kubelet.images import ImageError, ImageRef

BINS = Binaries(kube_dir=Path("/bins/kube"), etcd_dir=Path("/bins/etcd"))


def resolve(name: str, lab_root: Path = Path("/nonexistent")) -> images.Image:
    return images.resolve(name, lab_root=lab_root, binaries=BINS, support_dir=Path("/support"))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("registry.k8s.io/kube-scheduler:v1.36.3", "registry.k8s.io/kube-scheduler:v1.36.3"),
        ("vip/kcm:v1", "docker.io/vip/kcm:v1"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("busybox@sha256:abc", "docker.io/library/busybox:latest"),
    ],
)
def test_image_names_are_normalised(image: str, expected: str) -> None:
    assert ImageRef.parse(image).name == expected


def test_kube_images_map_to_the_lab_binaries_whatever_the_tag() -> None:
    img = resolve("registry.k8s.io/kube-controller-manager:v1.30.4")
    assert img.program == "kube-controller-manager"
    assert img.files == (
        images.ImageFile(
            "/usr/local/bin/kube-controller-manager", Path("/bins/kube/kube-controller-manager")
        ),
    )
    assert resolve("registry.k8s.io/etcd:3.6.0-0").files[0].source == Path("/bins/etcd/etcd")


def test_busybox_is_the_host_shell() -> None:
    img = resolve("busybox:1.36")
    assert img.program == "busybox" and img.files == () and img.cmd == ("sh",)


def test_unknown_image_names_the_image() -> None:
    with pytest.raises(ImageError, match=r"registry\.example/none:1"):
        resolve("registry.example/none:1")


def test_built_image_overlays_files_on_its_base(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "pki").mkdir(parents=True)
    (ctx / "pki" / "ca.crt").write_text("CA")
    (ctx / "controller-manager.conf").write_text("conf")
    (ctx / "Dockerfile").write_text(
        "FROM registry.k8s.io/kube-controller-manager:v1.30.4\n"
        "# from the control plane\n"
        "ADD pki /etc/kubernetes/pki/\n"
        "ADD controller-manager.conf /etc/kubernetes/controller-manager.conf\n"
    )
    built = images.build(tmp_path, "vip/kube-controller-manager:v1", ctx)
    assert built.base == "registry.k8s.io/kube-controller-manager:v1.30.4"
    img = resolve("vip/kube-controller-manager:v1", lab_root=tmp_path)
    assert img.program == "kube-controller-manager"
    targets = {f.target: f.source for f in img.files}
    assert (targets["/etc/kubernetes/pki"] / "ca.crt").read_text() == "CA"
    assert targets["/etc/kubernetes/controller-manager.conf"].read_text() == "conf"
    assert "/usr/local/bin/kube-controller-manager" in targets
    assert [b.name for b in images.list_built(tmp_path)] == [
        "docker.io/vip/kube-controller-manager:v1"
    ]


def test_file_into_a_directory_destination(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "Dockerfile").write_text('FROM busybox\nCOPY f /opt/\nCMD ["cat", "/opt/f"]\n')
    built = images.build(tmp_path / "store", "mine", tmp_path)
    assert built.files[0][0] == "/opt/f"
    img = resolve("mine", lab_root=tmp_path / "store")
    assert img.cmd == ("cat", "/opt/f")


def test_copy_chown_is_planned_numeric_only() -> None:
    _, copies = images.plan_build(
        "x", "FROM busybox\nCOPY --chown=65532:65533 a /a\nCOPY --chown=7 b /b\nADD c /c\n"
    )
    assert copies == [("a", "/a", (65532, 65533)), ("b", "/b", (7, 7)), ("c", "/c", None)]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_copy_chown_owns_the_built_files(tmp_path: Path) -> None:
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "sa.key").write_text("k")
    (tmp_path / "credentials" / "sa.key").chmod(0o400)
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nCOPY --chown=65532:65532 credentials/ /etc/kubehoist/credentials/\n"
    )
    images.build(tmp_path / "store", "baked", tmp_path)
    layer = next((tmp_path / "store" / "images").glob("*/layer/0"))
    for path in (layer, layer / "sa.key"):
        assert (path.stat().st_uid, path.stat().st_gid) == (65532, 65532)
    assert (layer / "sa.key").stat().st_mode & 0o777 == 0o400


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM busybox\nCOPY --chown=nonroot a /a\n", "numeric --chown"),
        ("ADD a /b\n", "before FROM"),
        ("FROM busybox\nRUN apk add curl\n", "RUN is not supported"),
        ("FROM busybox\nADD https://x/y /z\n", "URL"),
        ("FROM a\nFROM b\n", "multi-stage"),
        ("# nothing\n", "no FROM"),
    ],
)
def test_dockerfile_limits_are_clear(dockerfile: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        images.plan_build("x", dockerfile)


def test_context_escape_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "secret").write_text("s")
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nADD ../secret /s\n")
    with pytest.raises(ImageError, match="outside the build context"):
        images.build(tmp_path / "store", "x", tmp_path / "ctx")


def test_the_interpreter_and_source_are_bound_where_a_container_would_not_see_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kubehoist.lab.kubelet import images

    venv = Path("/tmp") / tmp_path.name / "venv"
    monkeypatch.setattr(images.sys, "prefix", str(venv))
    monkeypatch.setattr(images.sys, "exec_prefix", str(venv))
    monkeypatch.setattr(images.sys, "base_prefix", "/usr")
    monkeypatch.setattr(images.sys, "executable", "/usr/bin/python3")
    monkeypatch.setattr(Path, "is_dir", lambda self: True)
    binds = {b.target for b in images.interpreter_dirs()}
    assert str(venv) in binds
    assert "/usr" not in binds  # the container sees the host's /usr already
    monkeypatch.setattr(images.sys, "prefix", "/opt/venv")
    monkeypatch.setattr(images.sys, "exec_prefix", "/opt/venv")
    src = Path(images.__file__).resolve().parents[3]
    expected = {str(src)} if any(p in (Path("/tmp"), Path("/run")) for p in src.parents) else set()
    assert {b.target for b in images.interpreter_dirs()} == expected
