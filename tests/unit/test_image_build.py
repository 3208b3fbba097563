"""The kubehoist image: its pieces, and `kubehoist image build` from a small wheel over
a synthetic base layer (no mmdebstrap, no network)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubehoist.cli import cli
from kubehoist.errors import KubehoistError
from kubehoist.image import build as imagebuild
from kubehoist.image.archive import read_archive
from kubehoist.image.layers import FILE, normalize_rootfs
from tests.unit.imagefiles import check_oci_layout, layer_members


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


# --- the kubehoist image's pieces -----------------------------------------------------


def test_launcher_puts_the_site_first_and_runs_the_cli() -> None:
    text = imagebuild.launcher().decode()
    assert text.startswith("#!/usr/bin/python3 ")
    assert "sys.path.insert(0, '/usr/local/lib/kubehoist')" in text
    assert "from kubehoist.cli import main" in text


def test_site_entries_place_the_packages_and_launchers(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "kubehoist").mkdir(parents=True)
    (site / "kubehoist" / "__init__.py").write_text("")
    (site / "kubehoist-0.1.0.dist-info").mkdir()
    entries = {e.path: e for e in imagebuild.site_entries(site)}
    assert entries["usr/local/lib/kubehoist/kubehoist/__init__.py"].kind == FILE
    assert entries["usr/local/bin/kubehoist"].mode == 0o755
    assert entries["usr/local/bin/kubectl-hoist"].data == imagebuild.launcher()


def test_project_files_are_the_wheel_inputs() -> None:
    files = {str(p) for p in imagebuild.project_files()}
    assert {"pyproject.toml", "src/kubehoist/cli/__init__.py"} <= files
    assert "src/kubehoist/lab/gomod/pause/main.go" in files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)


def test_normalize_rootfs_drops_dev_and_dot_slash(tmp_path: Path) -> None:
    raw = tmp_path / "raw.tar"
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in (("./", tarfile.DIRTYPE), ("./dev/", tarfile.DIRTYPE),
                           ("./dev/null", tarfile.CHRTYPE), ("./bin", tarfile.SYMTYPE),
                           ("./usr/", tarfile.DIRTYPE)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uname = kind, 1234.5, "root"
            info.linkname = "usr/bin" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info)
        info = tarfile.TarInfo("./usr/x")
        info.size, info.mode = 2, 0o4755
        tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("./usr/y")
        link.type, link.linkname = tarfile.LNKTYPE, "./usr/x"
        tar.addfile(link)
    normalize_rootfs(raw, tmp_path / "layer.tar")
    members = layer_members((tmp_path / "layer.tar").read_bytes())
    assert list(members) == ["dev", "bin", "usr", "usr/x", "usr/y"]
    assert members["usr/x"].mode == 0o4755 and members["usr/y"].linkname == "usr/x"
    assert all(m.mtime == 0 and m.uname == "" and not m.pax_headers for m in members.values())


def test_plain_modes_ignore_the_umask(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "a.py").write_text("")
    (site / "pkg" / "tool").write_text("")
    (site / "pkg").chmod(0o700)
    (site / "pkg" / "a.py").chmod(0o600)
    (site / "pkg" / "tool").chmod(0o750)
    modes = {e.path.rsplit("/", 1)[-1]: e.mode for e in imagebuild.site_entries(site)}
    assert (modes["pkg"], modes["a.py"], modes["tool"]) == (0o755, 0o644, 0o755)


# --- `kubehoist image build` from a small wheel ---------------------------------------


def fake_wheel(tmp_path: Path, version: str = "9.9.9", extra: str = "") -> Path:
    """A pure-Python kubehoist wheel of two modules, with no requirements."""
    tag = "kubehoist-" + version
    files = {
        "kubehoist/__init__.py": f"__version__ = {version!r}\n{extra}",
        "kubehoist/cli.py": "def main() -> None:\n    print('kubehoist')\n",
        f"{tag}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: kubehoist\nVersion: {version}\n"
            'Requires-Dist: pytest>=8; extra == "dev"\n'
        ),
        f"{tag}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + f"{tag}.dist-info/RECORD,,\n"
    files[f"{tag}.dist-info/RECORD"] = record
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{tag}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), text)
    return path


def fake_rootfs(tmp_path: Path) -> Path:
    """A root filesystem tarball as mmdebstrap writes one (`./` names, PAX, times)."""
    path = tmp_path / "rootfs.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in ("./", "./usr/", "./usr/bin/", "./usr/lib/", "./usr/lib/python3/",
                     "./usr/lib/python3/dist-packages/", "./usr/local/"):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        info = tarfile.TarInfo("./usr/bin/python3")
        info.size, info.mode, info.mtime = 6, 0o755, 1700000000
        tar.addfile(info, io.BytesIO(b"python"))
    return path


def run_build(tmp_path: Path, *args: str) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["image", "build", *args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.stdout, result.stderr


def test_build_twice_gives_the_same_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, rootfs = fake_wheel(tmp_path), fake_rootfs(tmp_path)
    monkeypatch.chdir(tmp_path)
    out1, err1 = run_build(tmp_path, "--wheel", str(wheel), "--base", str(rootfs))
    dest = tmp_path / "kubehoist-9.9.9.oci.tar"  # the default name
    first = dest.read_bytes()
    assert out1.startswith("ghcr.io/kubehoist/kubehoist:9.9.9@sha256:")
    assert "wrote kubehoist-9.9.9.oci.tar: OCI image layout, 3 layers" in err1
    # another cache, another output: nothing of the first build is reused
    out2, _ = run_build(
        tmp_path, "--wheel", str(wheel), "--base", str(rootfs), "-q",
        "--cache-dir", str(tmp_path / "cache2"), "-o", str(tmp_path / "again.tar"),
    )  # fmt: skip
    assert out2 == out1
    assert (tmp_path / "again.tar").read_bytes() == first
    digest = out1.strip().partition("@")[2]
    layout = check_oci_layout(dest)
    assert layout["index"]["manifests"][0]["digest"] == digest
    assert layout["config"]["config"]["Entrypoint"] == ["kubehoist"]
    assert layout["config"]["config"]["Labels"]["org.opencontainers.image.version"] == "9.9.9"
    base, deps, project = (layer_members(data) for data in layout["layers"])
    assert base["usr/bin/python3"].mtime == 0 and "dev" not in base
    assert sorted(deps) == [
        "usr/lib/python3/dist-packages/kubehoist.pth",
        "usr/local/lib",
        "usr/local/lib/kubehoist",
    ]
    assert project["usr/local/bin/kubehoist"].mode == 0o755
    site = "usr/local/lib/kubehoist/"
    assert project[f"{site}kubehoist/cli.py"].mode == 0o644
    assert f"{site}kubehoist-9.9.9.dist-info/RECORD" in project
    assert not any(n.endswith(("direct_url.json", ".pyc")) for n in project)
    # a new wheel changes the digest, and only the last layer
    other = fake_wheel(tmp_path / "other", extra="# changed\n")
    out3, _ = run_build(tmp_path, "--wheel", str(other), "--base", str(rootfs), "-o", "o.tar")
    assert out3 != out1
    changed = check_oci_layout(tmp_path / "o.tar")["manifest"]["layers"]
    assert (
        changed[:2] == layout["manifest"]["layers"][:2]
        and changed[2] != layout["manifest"]["layers"][2]
    )


def test_build_docker_format_and_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, rootfs = fake_wheel(tmp_path), fake_rootfs(tmp_path)
    monkeypatch.chdir(tmp_path)
    out, err = run_build(
        tmp_path, "--wheel", str(wheel), "--base", str(rootfs), "--format", "docker",
        "-t", "registry.internal/kubehoist:9",
    )  # fmt: skip
    assert out == "registry.internal/kubehoist:9\n"
    archive = read_archive(tmp_path / "kubehoist-9.9.9.docker.tar")
    assert archive.format == "docker" and archive.names == ("registry.internal/kubehoist:9",)
    assert f"image id {archive.image_id}" in err
    run_build(
        tmp_path,
        "--wheel",
        str(wheel),
        "--base",
        str(rootfs),
        "-t",
        "registry.internal/kubehoist:9",
    )
    # the same config in both formats: the same image id
    assert read_archive(tmp_path / "kubehoist-9.9.9.oci.tar").image_id == archive.image_id


def test_build_errors_are_one_line(tmp_path: Path) -> None:
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_text("no zip")
    result = CliRunner().invoke(cli, ["image", "build", "--wheel", str(not_a_wheel)])
    assert result.exit_code != 0 and "x.whl: not a readable wheel" in result.stderr
    with pytest.raises(KubehoistError, match=r"no kubehoist source tree at .* --wheel"):
        imagebuild.project_files(tmp_path)


def test_read_wheel_skips_the_extras(tmp_path: Path) -> None:
    wheel = imagebuild.read_wheel(fake_wheel(tmp_path, "1.2.3"))
    assert (wheel.version, wheel.requires) == ("1.2.3", ())
