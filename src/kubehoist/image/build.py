"""The kubehoist image (the guard's): three layers over nothing else,

1. Debian's root filesystem with python3, made by mmdebstrap (SOURCE_DATE_EPOCH=0),
2. the project's dependencies, as its wheel's metadata lists them,
3. the project's wheel itself and the launchers `kubehoist` and `kubectl-hoist`,

both Python layers installed with `pip install --target` below /usr/local/lib/kubehoist
for CPython 3.11 on manylinux2014 x86_64, without byte-code. The wheel is the one
users install: built from a checkout with the standard front-end (`python3 -m build
--wheel`), or given. `kubehoist image build` and the lab build it the same way.

The writers are reproducible (same layers, same bytes, same digest); the first two
layers depend on what deb.debian.org and PyPI serve on the day they are built, which
is why they are built once per machine and kept in the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.parser import HeaderParser
from pathlib import Path
from typing import Final

from kubehoist.errors import KubehoistError
from kubehoist.image import cache
from kubehoist.image.archive import Archive, Format, read_archive, write_image
from kubehoist.image.config import ImageConfig, normalize
from kubehoist.image.layers import (
    DIR,
    FILE,
    Entry,
    Layer,
    directory,
    file_data,
    gzip_layer,
    layer_of,
    normalize_rootfs,
    tree_entries,
    tree_of,
    write_layer,
)

REPOSITORY: Final = "ghcr.io/kubehoist/kubehoist"
"""Where the project publishes the image; its tag is the version."""

PROJECT_ROOT: Final = Path(__file__).resolve().parents[3]
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SITE_DIR: Final = "usr/local/lib/kubehoist"
"""Where the kubehoist image's Python packages live (`pip install --target`)."""
SITE_PTH: Final = "usr/lib/python3/dist-packages/kubehoist.pth"

DEBIAN_SUITE: Final = "bookworm"
MMDEBSTRAP_ARGS: Final = (
    "--variant=essential",
    "--include=python3",
    # merged /usr set up by the hook instead of the usrmerge package, which needs perl
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    DEBIAN_SUITE,
)
PIP_TARGET_ARGS: Final = (
    "--only-binary=:all:",
    "--platform",
    "manylinux2014_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
)

Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def default_name(version: str) -> str:
    return f"{REPOSITORY}:{version}"


# --- the Debian layer -----------------------------------------------------------------


def debian_key() -> str:
    return cache.key("mmdebstrap", *MMDEBSTRAP_ARGS)


def debian_layer() -> Layer:
    """Debian's root filesystem with python3, made by mmdebstrap, cached as a layer."""
    dest = cache.images_cache() / f"debian-{DEBIAN_SUITE}-{debian_key()}.tar"
    return layer_of(cache.build_once(dest, _build_debian))


def rootfs_layer(rootfs: Path) -> Layer:
    """A root filesystem tarball made elsewhere (mmdebstrap on another machine, a
    `docker export`), taken instead of the Debian layer; cached as a layer, keyed by
    its digest."""
    if not rootfs.is_file():
        raise KubehoistError(f"base root filesystem {rootfs}: no such file")
    digest = cache.file_digest(rootfs, "base root filesystem")
    dest = cache.images_cache() / f"rootfs-{cache.key('rootfs', digest)}.tar"
    try:
        return layer_of(cache.build_once(dest, lambda tmp: normalize_rootfs(rootfs, tmp)))
    except tarfile.TarError as exc:
        raise KubehoistError(f"base root filesystem {rootfs}: not a tar file: {exc}") from exc


def _build_debian(dest: Path) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise KubehoistError(
            "the kubehoist image's Debian layer: no `mmdebstrap` on PATH "
            "(apt-get install mmdebstrap)"
        )
    with cache.workdir("mmdebstrap") as work:
        raw = work / "rootfs.tar"
        log = cache.images_cache() / "mmdebstrap.log"
        env = dict(os.environ, SOURCE_DATE_EPOCH="0")
        with open(log, "w") as log_fh:
            proc = subprocess.run(
                [mmdebstrap, "--quiet", *MMDEBSTRAP_ARGS, str(raw)],
                env=env,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            tail = (log.read_text(errors="replace").strip().splitlines() or [""])[-1]
            raise KubehoistError(
                f"the kubehoist image's Debian layer: mmdebstrap failed (exit "
                f"{proc.returncode}): {tail} (full log: {log})"
            )
        normalize_rootfs(raw, dest)


# --- the wheel ------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheel:
    """The project's wheel and what its metadata says."""

    path: Path
    version: str
    requires: tuple[str, ...]  # Requires-Dist, without the extras'


def read_wheel(path: Path) -> Wheel:
    """Version and runtime requirements of a kubehoist wheel (its METADATA)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise KubehoistError(f"{path}: not a wheel (no single .dist-info/METADATA)")
            metadata = HeaderParser().parsestr(zf.read(names[0]).decode())
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise KubehoistError(f"{path}: not a readable wheel: {exc}") from exc
    if (metadata.get("Name") or "").lower() != "kubehoist" or not metadata.get("Version"):
        raise KubehoistError(f"{path}: not a kubehoist wheel (Name {metadata.get('Name')!r})")
    requires = [r.strip() for r in metadata.get_all("Requires-Dist") or () if "extra ==" not in r]
    return Wheel(path, str(metadata["Version"]), tuple(requires))


def project_files(project: Path = PROJECT_ROOT) -> list[Path]:
    """The files the project's wheel is built from (relative to `project`)."""
    if not (project / "pyproject.toml").is_file() or not (project / "src/kubehoist").is_dir():
        raise KubehoistError(
            f"no kubehoist source tree at {project} to build the wheel from "
            "(pass a wheel: --wheel dist/kubehoist-<version>-py3-none-any.whl)"
        )
    files = [Path(n) for n in ("pyproject.toml", "README.md") if (project / n).is_file()]
    for path in sorted((project / "src/kubehoist").rglob("*")):
        rel = path.relative_to(project)
        if "__pycache__" in rel.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        files.append(rel)
    return files


def source_key(project: Path = PROJECT_ROOT) -> list[tuple[str, str]]:
    """The source files and their digests: what the wheel is made of."""
    files = project_files(project)
    return [(str(rel), cache.file_digest(project / rel, "kubehoist")) for rel in files]


def build_wheel(project: Path, work: Path) -> Path:
    """The project's wheel, built from a copy of its files (so that the checkout is
    left alone) with `python3 -m build --wheel` (or `pip wheel` without the `build`
    package)."""
    copy, out = work / "project", work / "wheels"
    for rel in project_files(project):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, copy / rel)
    try:
        import build  # noqa: F401

        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(copy)]
    except ImportError:
        cmd = [*_PIP, "wheel", "--no-deps", "-w", str(out), str(copy)]
    _run(cmd, "building the wheel")
    wheels = sorted(out.glob("kubehoist-*.whl"))
    if len(wheels) != 1:
        raise KubehoistError(f"building the wheel made {len(wheels)} kubehoist wheels")
    return wheels[0]


@contextmanager
def project_wheel(wheel: Path | None = None, project: Path = PROJECT_ROOT) -> Iterator[Wheel]:
    """The given wheel, or one built from the source tree for the block."""
    if wheel is not None:
        yield read_wheel(wheel)
        return
    with cache.workdir("wheel") as work:
        yield read_wheel(build_wheel(project, work))


# --- the Python layers ----------------------------------------------------------------

_PIP: Final = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet")


def _run(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise KubehoistError(f"the kubehoist image: {what} failed: {tail}")


def pip_install(site: Path, args: Sequence[str]) -> None:
    """`pip install --target` for CPython 3.11 on manylinux2014 x86_64, whatever the
    host's interpreter, without byte-code (it would not be reproducible)."""
    _run(
        [*_PIP, "install", "--no-compile", "--no-warn-script-location", "--target", str(site),
         *PIP_TARGET_ARGS, *args],
        "pip install",
    )  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts for the host's python
    for direct_url in site.glob("*.dist-info/direct_url.json"):  # names a host's path
        direct_url.unlink()
        record = direct_url.with_name("RECORD")
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if "/direct_url.json," not in ln))


def plain_modes(entries: Iterable[Entry]) -> list[Entry]:
    """Modes as a umask of 022 gives them (0755 and 0644), whatever the host's."""
    out = []
    for e in entries:
        if e.kind == DIR:
            out.append(replace(e, mode=0o755))
        elif e.kind == FILE:
            out.append(replace(e, mode=0o755 if e.mode & 0o111 else 0o644))
        else:
            out.append(e)
    return out


def dependencies_key(requires: Sequence[str]) -> str:
    return cache.key("dependencies", sorted(requires), PIP_TARGET_ARGS, SITE_DIR, SITE_PTH)


def dependencies_layer(requires: Sequence[str], *, lower: Layer) -> Layer:
    """The project's dependencies under /usr/local/lib/kubehoist, cached as a layer."""
    dest = cache.images_cache() / f"kubehoist-dependencies-{dependencies_key(requires)}.tar"

    def make(tmp: Path) -> None:
        with cache.workdir("dependencies") as work:
            site = work / "site"
            site.mkdir()
            if requires:
                pip_install(site, list(requires))
            entries = [
                directory(SITE_DIR),
                *plain_modes(tree_entries(site, SITE_DIR, owner=None, mode=None)),
                # so that the image's python3 (not only the launchers) finds them
                file_data(SITE_PTH, f"/{SITE_DIR}\n".encode()),
            ]
            write_layer(entries, tmp, lower_dirs=tree_of([lower]).dirs)

    if not dest.exists():
        cache.build_once(dest, make)
        cache.prune(dest, "kubehoist-dependencies-", ".tar")
    return layer_of(dest)


def launcher() -> bytes:
    """/usr/local/bin/kubehoist (and kubectl-hoist) in the kubehoist image."""
    return (
        "#!/usr/bin/python3 -I\n"
        "# kubehoist in the kubehoist image (written by kubehoist.image.build).\n"
        "import sys\n\n"
        f"sys.path.insert(0, '/{SITE_DIR}')\n"
        "from kubehoist.cli import main\n\n"
        "main()\n"
    ).encode()


def site_entries(site: Path) -> list[Entry]:
    """The site directory at /usr/local/lib/kubehoist plus the two launchers."""
    entries = plain_modes(tree_entries(site, SITE_DIR, owner=None, mode=None))
    entries += [
        file_data("usr/local/bin/kubehoist", launcher(), 0o755),
        file_data("usr/local/bin/kubectl-hoist", launcher(), 0o755),
    ]
    return entries


def wheel_layer(wheel: Wheel, work: Path, *, lower: Sequence[Layer]) -> Layer:
    """The wheel installed below /usr/local/lib/kubehoist, with the launchers."""
    site = work / "site"
    pip_install(site, ["--no-deps", str(wheel.path)])
    return write_layer(site_entries(site), work / "kubehoist.tar", lower_dirs=tree_of(lower).dirs)


# --- the image ------------------------------------------------------------------------


def image_config(version: str) -> ImageConfig:
    return ImageConfig(
        env=(f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"),
        entrypoint=("kubehoist",),
        labels=(
            ("org.opencontainers.image.title", "kubehoist"),
            ("org.opencontainers.image.version", version),
        ),
    )


def write_kubehoist_image(
    dest: Path,
    wheel: Wheel,
    *,
    name: str | None = None,
    fmt: Format = "oci",
    base: Layer | None = None,
    say: Say = _quiet,
) -> Archive:
    """Write the image of `wheel` at `dest` (through a temporary file next to it):
    an OCI layout archive with gzip layers, or a docker archive with plain ones.
    `base` replaces the Debian layer (see `rootfs_layer`)."""
    full = normalize(name or default_name(wheel.version))
    if base is None:
        say(f"Debian {DEBIAN_SUITE} layer (mmdebstrap; cached in {cache.images_cache()})")
        base = debian_layer()
    say(f"dependencies layer ({len(wheel.requires)} requirements; cached)")
    deps = dependencies_layer(wheel.requires, lower=base)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with cache.workdir("kubehoist") as work:
        say(f"kubehoist layer ({wheel.path.name})")
        layers = [base, deps, wheel_layer(wheel, work, lower=[base, deps])]
        if fmt == "oci":
            say("compressing (gzip; the base layers once, cached)")
            layers = [
                cache.cached_gzip(layers[0]),
                cache.cached_gzip(layers[1]),
                gzip_layer(layers[2], work / "kubehoist.tar.gz"),
            ]
        try:
            write_image(tmp, full, image_config(wheel.version), layers, fmt)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
    return read_archive(dest)
