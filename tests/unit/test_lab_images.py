"""The lab's image archives: their format, reproducibility, the cache, busybox's
applets, the pause program and the import into a node's containerd (with a
fake ctr). No root, no containerd."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from kubehoist.errors import KubehoistError
from kubehoist.image.archive import read_archive
from kubehoist.image.cache import Recipe, images_cache
from kubehoist.image.config import normalize
from kubehoist.image.layers import file_data, write_layer
from kubehoist.lab import dockerfile, images
from kubehoist.lab.binaries import Binaries, locate
from tests.unit.imagefiles import executable, layer_file, layer_members, open_archive, sha256

KCM = "registry.k8s.io/kube-controller-manager:v1.36.3"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


# --- the archive format ---------------------------------------------------------------


def test_binary_image_archive_has_docker_archive_structure(tmp_path: Path) -> None:
    binary = executable(tmp_path / "kcm", b"\x7fELF pretend kube-controller-manager")
    archive = images.binary_image(KCM, binary, "kube-controller-manager").ensure()
    assert archive.parent == images_cache()

    opened = open_archive(archive)
    entry, config, layers = opened.entry, opened.config, opened.layers
    names = [m.name for m in opened.members]
    assert names == sorted(names)
    assert set(entry) == {"Config", "RepoTags", "Layers"}
    assert entry["RepoTags"] == [KCM]
    assert entry["Config"] == f"{sha256(opened.config_bytes)}.json"
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha256(layers[0])}"]}
    assert config["config"] == {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "Entrypoint": ["/usr/local/bin/kube-controller-manager"],
    }
    for m in opened.members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})

    members = layer_members(layers[0])
    assert list(members) == sorted(members)
    kcm = members["usr/local/bin/kube-controller-manager"]
    assert kcm.isfile() and kcm.mode == 0o755 and (kcm.uid, kcm.gid) == (0, 0)
    assert layer_file(layers[0], kcm.name) == binary.read_bytes()
    for parent in ("usr", "usr/local", "usr/local/bin", "etc"):
        assert members[parent].isdir() and members[parent].mode == 0o755
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    nonroot = members["home/nonroot"]
    assert (nonroot.uid, nonroot.gid, nonroot.mode) == (65532, 65532, 0o700)
    passwd = layer_file(layers[0], "etc/passwd").decode()
    assert "root:x:0:0:" in passwd and ":65534:65534:" in passwd and ":65532:65532:" in passwd
    group = layer_file(layers[0], "etc/group").decode()
    assert "nobody:x:65534:" in group and "nonroot:x:65532:" in group
    assert "hosts: files dns" in layer_file(layers[0], "etc/nsswitch.conf").decode()
    for m in members.values():
        assert (m.mtime, m.uname, m.gname, m.pax_headers) == (0, "", "", {})


def test_read_archive_finds_layers_inside_the_archive(tmp_path: Path) -> None:
    binary = executable(tmp_path / "etcd", b"etcd")
    archive = images.binary_image("registry.k8s.io/etcd:3.6.8-0", binary, "etcd").ensure()
    a = read_archive(archive)
    opened = open_archive(archive)
    assert a.names == ("registry.k8s.io/etcd:3.6.8-0",)
    assert a.size == archive.stat().st_size
    assert a.config.entrypoint == ("/usr/local/bin/etcd",)
    (layer,) = a.layers
    with open(archive, "rb") as fh:
        raw = fh.read()
    assert raw[layer.offset : layer.offset + layer.size] == opened.layers[0]
    assert layer.diff_id == opened.config["rootfs"]["diff_ids"][0]
    assert a.image_id == f"sha256:{sha256(opened.config_bytes)}"
    assert b"PaxHeader" not in raw


def test_long_paths_use_gnu_headers_not_pax(tmp_path: Path) -> None:
    deep = "usr/lib/" + "/".join(["a-rather-long-directory-name"] * 6) + "/file.py"
    layer = write_layer([file_data(deep, b"x")], tmp_path / "layer.tar")
    raw = layer.path.read_bytes()
    assert b"PaxHeader" not in raw and b"mtime=" not in raw and b"././@LongLink" in raw
    assert deep in layer_members(raw)
    assert layer.diff_id == f"sha256:{sha256(raw)}" and layer.size == len(raw)


def test_write_layer_keeps_lower_directories_alone(tmp_path: Path) -> None:
    entries = [file_data("tmp/x/y", b"1"), file_data("tmp/z", b"2")]
    layer = write_layer(entries, tmp_path / "l.tar", lower_dirs={"tmp"})
    assert sorted(layer_members(layer.path.read_bytes())) == ["tmp/x", "tmp/x/y", "tmp/z"]


def test_a_file_cannot_be_a_parent(tmp_path: Path) -> None:
    entries = [file_data("a", b"1"), file_data("a/b", b"2")]
    with pytest.raises(KubehoistError, match="a is not a directory"):
        write_layer(entries, tmp_path / "l.tar")


# --- reproducibility and the cache ----------------------------------------------------


def test_same_inputs_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = executable(tmp_path / "kube-scheduler", os.urandom(4096))
    digests = []
    for n in range(2):
        monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / f"cache{n}"))
        recipe = images.binary_image(
            "registry.k8s.io/kube-scheduler:v1.36.3", binary, "kube-scheduler"
        )
        digests.append(sha256(recipe.ensure().read_bytes()))
    assert digests[0] == digests[1]


def test_cached_archive_is_reused_and_a_new_input_gets_a_new_key(tmp_path: Path) -> None:
    binary = executable(tmp_path / "kube-apiserver", b"v1")
    name = "registry.k8s.io/kube-apiserver:v1.36.3"
    first = images.binary_image(name, binary, "kube-apiserver")
    path = first.ensure()
    before = path.stat().st_mtime_ns

    def fail(dest: Path) -> None:
        raise AssertionError("rebuilt a cached archive")

    assert Recipe(first.name, first.key, fail).ensure() == path
    assert path.stat().st_mtime_ns == before
    binary.write_bytes(b"v2")
    second = images.binary_image(name, binary, "kube-apiserver")
    assert second.key != first.key and second.ensure() != path
    assert not list(images_cache().glob(".*.tmp-*"))


def test_older_keys_of_the_same_image_are_pruned_after_an_hour(tmp_path: Path) -> None:
    binary = executable(tmp_path / "etcd", b"etcd")
    recipe = images.binary_image("registry.k8s.io/etcd:3.6.8-0", binary, "etcd")
    cache = images_cache()
    cache.mkdir(parents=True)
    old, young = (
        cache / f"registry.k8s.io_etcd_3.6.8-0-{'a' * 20}.tar",
        cache / (f"registry.k8s.io_etcd_3.6.8-0-{'b' * 20}.tar"),
    )
    other = cache / f"registry.k8s.io_etcd_3.6.8-0-x-{'c' * 20}.tar"
    for path in (old, young, other):
        path.write_bytes(b"")
    os.utime(old, (0, 0))
    os.utime(other, (0, 0))
    recipe.ensure()
    assert not old.exists() and young.exists() and other.exists()


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(dest: Path) -> None:
        dest.write_bytes(b"half")
        raise KubehoistError("boom")

    recipe = Recipe("docker.io/library/x:1", "0" * 20, broken)
    with pytest.raises(KubehoistError, match="boom"):
        recipe.ensure()
    assert not recipe.archive.exists()
    assert [p.name for p in images_cache().iterdir() if not p.name.endswith(".lock")] == []


# --- names and kubeadm's image list ---------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("vip/kcm:v1", "docker.io/vip/kcm:v1"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10.2"),
        ("ghcr.io/kubehoist/kubehoist:0.1.0", "ghcr.io/kubehoist/kubehoist:0.1.0"),
    ],
)
def test_names_are_normalized_like_containerd(image: str, expected: str) -> None:
    assert normalize(image) == expected


@pytest.mark.parametrize("image", ["", "Busybox:1", "a b", "busybox@sha256:00"])
def test_bad_names_are_refused(image: str) -> None:
    with pytest.raises(KubehoistError, match="image name"):
        normalize(image)


def fake_kubeadm(tmp_path: Path) -> Binaries:
    """Binaries of one directory (as KUBEHOIST_BIN_DIR gives) with a fake kubeadm."""
    executable(
        tmp_path / "bins" / "kubeadm",
        "#!/bin/sh\n"
        '[ "$1 $2 $3 $4 $5" = "config images list --kubernetes-version v1.36.3" ] || exit 3\n'
        "printf '%s\\n' registry.k8s.io/kube-apiserver:v1.36.3 "
        "registry.k8s.io/kube-controller-manager:v1.36.3 registry.k8s.io/kube-scheduler:v1.36.3 "
        "registry.k8s.io/kube-proxy:v1.36.3 registry.k8s.io/coredns/coredns:v1.14.2 "
        "registry.k8s.io/pause:3.10.2 registry.k8s.io/etcd:3.6.8-0\n",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBEHOIST_BIN_DIR", str(tmp_path / "bins"))
        return locate()


def test_kubeadm_names_the_images(tmp_path: Path) -> None:
    names = images.kubeadm_images(fake_kubeadm(tmp_path), "v1.36.3")
    assert names["pause"] == "registry.k8s.io/pause:3.10.2"
    assert names["etcd"] == "registry.k8s.io/etcd:3.6.8-0"
    assert names["kube-controller-manager"] == KCM
    assert names["coredns"] == "registry.k8s.io/coredns/coredns:v1.14.2"
    with pytest.raises(KubehoistError, match="failed"):
        images.kubeadm_images(fake_kubeadm(tmp_path), "v1.35.0")


def test_image_table_lists_lab_and_built_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = executable(tmp_path / "kcm", b"kcm")
    built = images.binary_image(KCM, binary, "kube-controller-manager")
    missing = images.binary_image("registry.k8s.io/etcd:3.6.8-0", binary, "etcd")
    monkeypatch.setattr(images, "lab_recipes", lambda b, v: [built, missing])
    built.ensure()
    lab_root = tmp_path / "lab"
    context = tmp_path / "ctx"
    executable(context / "tool", "#!/bin/sh\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY tool /\n")
    dockerfile.build_from_dockerfile(lab_root, "vip/tool:1", context / "Dockerfile", context)
    rows = images.image_table(fake_kubeadm(tmp_path), "v1.36.3", lab_root)
    assert [(r.name, r.origin) for r in rows] == [
        (KCM, "lab"),
        ("registry.k8s.io/etcd:3.6.8-0", "lab"),
        ("docker.io/vip/tool:1", "FROM scratch"),
    ]
    assert rows[0].archive == built.archive and rows[0].size == built.archive.stat().st_size
    assert rows[0].image_id == read_archive(built.archive).image_id
    assert rows[1].archive is None and rows[1].image_id is None


# --- busybox --------------------------------------------------------------------------


def fake_busybox(tmp_path: Path) -> Path:
    return executable(
        tmp_path / "busybox",
        "#!/bin/sh\n"
        '[ "$1" = --list-full ] || exit 1\n'
        "printf '%s\\n' bin/sh bin/cat bin/busybox usr/bin/sha256sum bin/sync sbin/ifconfig\n",
    )


def test_busybox_image_has_a_symlink_per_applet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busybox = fake_busybox(tmp_path)
    monkeypatch.setattr(images, "is_static_elf", lambda path: True)
    archive = images.busybox_image(busybox=busybox).ensure()
    opened = open_archive(archive)
    config, layers = opened.config, opened.layers
    assert config["config"] == {  # the upstream image's settings
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
    }
    members = layer_members(layers[0])
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert layer_file(layers[0], "bin/busybox") == busybox.read_bytes()
    links = {n: m.linkname for n, m in members.items() if m.issym()}
    assert links == {
        a: "/bin/busybox"
        for a in ("bin/sh", "bin/cat", "usr/bin/sha256sum", "bin/sync", "sbin/ifconfig")
    }
    assert members["tmp"].mode == 0o1777 and "etc/passwd" in members


def test_busybox_applets_need_a_shell(tmp_path: Path) -> None:
    busybox = executable(tmp_path / "busybox", "#!/bin/sh\necho bin/cat\n")
    with pytest.raises(KubehoistError, match="bin/sh"):
        images.busybox_applets(busybox)


def test_missing_or_dynamic_busybox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubehoistError, match=r"nothing/busybox is missing.*busybox-static"):
        images.busybox_image(busybox=tmp_path / "nothing" / "busybox")
    with pytest.raises(KubehoistError, match=r"not a static binary.*busybox-static"):
        images.busybox_image(busybox=fake_busybox(tmp_path))


def elf(tmp_path: Path, name: str, program_headers: list[int]) -> Path:
    """A minimal ELF64 header with program headers of the given types."""
    phoff, phentsize = 64, 56
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, phentsize,
                          len(program_headers), 64, 0, 0)  # fmt: skip
    table = b"".join(struct.pack("<II", t, 0) + bytes(phentsize - 8) for t in program_headers)
    return executable(tmp_path / name, header + table)


def test_static_check_reads_the_program_headers(tmp_path: Path) -> None:
    pt_load, pt_dynamic, pt_interp = 1, 2, 3
    assert images.is_static_elf(elf(tmp_path, "static", [pt_load, pt_load]))
    assert images.is_static_elf(elf(tmp_path, "static-pie", [pt_load, pt_dynamic]))
    assert not images.is_static_elf(elf(tmp_path, "dynamic", [pt_load, pt_interp, pt_dynamic]))
    assert not images.is_static_elf(executable(tmp_path / "script", "#!/bin/sh\n"))


# --- the pause program ----------------------------------------------------------------


def test_pause_exits_zero_on_sigterm_and_sigint() -> None:
    pause = images.pause_binary()
    assert images.is_static_elf(pause)
    assert pause == images.pause_binary()  # built once
    version = subprocess.run([str(pause), "-v"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("kubehoist-pause")
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(pause)], stderr=subprocess.PIPE)
        proc.stderr.readline()  # type: ignore[union-attr]  # its "not PID 1" warning: it runs
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        proc.stderr.close()  # type: ignore[union-attr]


def test_pause_image_runs_pause_as_65535(tmp_path: Path) -> None:
    archive = images.pause_image("registry.k8s.io/pause:3.10.2").ensure()
    opened = open_archive(archive)
    config, layers = opened.config, opened.layers
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert layer_file(layers[0], "pause") == images.pause_binary().read_bytes()


# --- import into a node ---------------------------------------------------------------


def fake_ctr(tmp_path: Path, *, fail_import: bool = False, unpacked: str = "true") -> Path:
    """A ctr that records its arguments and stdin, and answers ls -q and check."""
    log = tmp_path / "ctr.log"
    return executable(
        tmp_path / "ctr",
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case "$*" in\n'
        '  *"images import"*)\n'
        f"    cat > {tmp_path}/stdin-$$.tar\n"
        + ('    echo "ctr: no such format" >&2; exit 1;;\n' if fail_import else "    ;;\n")
        + '  *"images ls -q"*) echo registry.k8s.io/etcd:3.6.8-0; echo sha256:abc;;\n'
        '  *"images check"*)\n'
        "    echo 'REF TYPE DIGEST STATUS SIZE UNPACKED'\n"
        f"    echo 'registry.k8s.io/etcd:3.6.8-0 application/x sha256:1 complete (2/2) "
        f"26.0 MiB/26.0 MiB {unpacked}';;\n"
        "esac\n",
    )


def test_import_pipes_the_archive_and_pins_the_image(tmp_path: Path) -> None:
    binary = executable(tmp_path / "etcd", b"etcd")
    archive = images.binary_image("registry.k8s.io/etcd:3.6.8-0", binary, "etcd").ensure()
    ctr = fake_ctr(tmp_path)
    images.import_archives(["env", "--"], ctr, [archive])
    calls = (tmp_path / "ctr.log").read_text().splitlines()
    prefix = "--address /run/containerd/containerd.sock -n k8s.io images"
    assert calls == [
        f"{prefix} import --label io.cri-containerd.pinned=pinned -",
        f"{prefix} ls -q",
        f"{prefix} check",
    ]
    (stdin,) = tmp_path.glob("stdin-*.tar")
    assert stdin.read_bytes() == archive.read_bytes()


def test_import_failure_names_the_image(tmp_path: Path) -> None:
    binary = executable(tmp_path / "etcd", b"etcd")
    archive = images.binary_image("registry.k8s.io/etcd:3.6.8-0", binary, "etcd").ensure()
    with pytest.raises(
        KubehoistError,
        match=r"image registry.k8s.io/etcd:3.6.8-0: importing .* failed \(exit 1\): "
        r"ctr: no such format",
    ):
        images.import_archives([], fake_ctr(tmp_path, fail_import=True), [archive])
    with pytest.raises(KubehoistError, match=r"etcd:3.6.8-0: imported .* but not unpacked"):
        images.import_archives([], fake_ctr(tmp_path, unpacked="false"), [archive])
    other = images.binary_image("registry.k8s.io/etcd:3.6.9-0", binary, "etcd").ensure()
    with pytest.raises(KubehoistError, match=r"etcd:3.6.9-0: not in the node's containerd"):
        images.import_archives([], fake_ctr(tmp_path), [other])
