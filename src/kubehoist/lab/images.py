"""The lab's container images: real image archives, written by our own code, for the
containerd of every lab node (there is no registry to pull from).

They are built once per machine into the image cache, keyed by a hash of their
inputs: kube-apiserver, kube-controller-manager, kube-scheduler and etcd (the lab's
static binary on a distroless-like base), the sandbox image (our own pause program
from `gomod/pause`) and busybox (Debian's static busybox with one symlink per applet)
as docker archives of one uncompressed layer; and the kubehoist image, an OCI layout
archive made by the same code as `kubehoist image build` (kubehoist.image.build) from
the checkout's wheel.

Every node imports them with `ctr images import`, pinned so that the kubelet's image
garbage collection never removes them; the images built from a Dockerfile
(`lab image build`, lab.dockerfile) too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from kubehoist.errors import KubehoistError
from kubehoist.guard.manifest import DEFAULT_IMAGE as KUBEHOIST_IMAGE
from kubehoist.image import build as imagebuild
from kubehoist.image.archive import read_archive, write_archive
from kubehoist.image.cache import (
    Recipe,
    build_once,
    file_digest,
    images_cache,
    prune,
    workdir,
)
from kubehoist.image.cache import key as cache_key
from kubehoist.image.config import ImageConfig, normalize
from kubehoist.image.layers import Entry, directory, file_data, file_from, symlink, write_layer
from kubehoist.lab.binaries import Binaries

STATIC_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_PATH: Final = imagebuild.DEFAULT_PATH

BUSYBOX_IMAGE: Final = "docker.io/library/busybox:1.36"
BUSYBOX_BINARY: Final = Path("/bin/busybox")
KUBE_IMAGE_PROGRAMS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")

CONTAINERD_SOCKET: Final = "/run/containerd/containerd.sock"
CRI_NAMESPACE: Final = "k8s.io"
PINNED_LABEL: Final = "io.cri-containerd.pinned=pinned"
"""The CRI plugin reports an image with this label as pinned; the kubelet's image
garbage collection never removes a pinned image."""

PAUSE_MODULE: Final = Path(__file__).parent / "gomod" / "pause"

PASSWD: Final = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP: Final = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
NSSWITCH: Final = (
    "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
    "protocols: files\nservices: files\n"
)


def _single_layer_image(
    name: str, config: ImageConfig, entries: Callable[[], Iterable[Entry]]
) -> Callable[[Path], None]:
    def make(dest: Path) -> None:
        with workdir("layer") as work:
            layer = write_layer(entries(), work / "layer.tar")
            write_archive(dest, name, config, [layer])

    return make


def base_files() -> list[Entry]:
    """A distroless-like base: users root, nobody and nonroot, /tmp, nsswitch.conf."""
    return [
        directory("etc"),
        file_data("etc/passwd", PASSWD.encode()),
        file_data("etc/group", GROUP.encode()),
        file_data("etc/nsswitch.conf", NSSWITCH.encode()),
        directory("tmp", 0o1777),
        directory("root", 0o700),
        directory("home"),
        directory("home/nonroot", 0o700, 65532, 65532),
    ]


def binary_image(name: str, binary: Path, program: str) -> Recipe:
    """A static binary at /usr/local/bin/<program> on the distroless-like base."""
    key = cache_key("binary", name, program, file_digest(binary, f"image {name}"))
    config = ImageConfig(env=(f"PATH={STATIC_PATH}",), entrypoint=(f"/usr/local/bin/{program}",))
    return Recipe(
        name,
        key,
        _single_layer_image(
            name,
            config,
            lambda: [*base_files(), file_from(f"usr/local/bin/{program}", binary)],
        ),
    )


# --- pause ----------------------------------------------------------------------------


def _pause_sources() -> list[Path]:
    return sorted(p for p in PAUSE_MODULE.iterdir() if p.suffix == ".go" or p.name == "go.mod")


def pause_binary() -> Path:
    """Our pause program (gomod/pause), built with CGO_ENABLED=0 into the cache."""
    digest = cache_key("pause", *((p.name, file_digest(p, "pause")) for p in _pause_sources()))
    dest = images_cache() / f"pause-{digest}"
    if not dest.exists():
        build_once(dest, _build_pause)
        prune(dest, "pause-", "")
    return dest


def _build_pause(dest: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise KubehoistError(f"cannot build the pause program in {PAUSE_MODULE}: no `go` on PATH")
    env = dict(
        os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false", GOTOOLCHAIN="local"
    )
    cmd = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest), "."]
    proc = subprocess.run(
        cmd, cwd=PAUSE_MODULE, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise KubehoistError(f"building the pause program in {PAUSE_MODULE} failed: {tail}")


def pause_image(name: str) -> Recipe:
    """The sandbox image: /pause as entrypoint, run as 65535 like the upstream image."""
    binary = pause_binary()
    key = cache_key("pause-image", name, file_digest(binary, f"image {name}"))
    config = ImageConfig(env=(f"PATH={STATIC_PATH}",), entrypoint=("/pause",), user="65535:65535")
    return Recipe(
        name, key, _single_layer_image(name, config, lambda: [file_from("pause", binary)])
    )


# --- busybox --------------------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """Whether `path` is a 64-bit ELF executable without a program interpreter (a
    dynamically linked program has a PT_INTERP header naming its loader)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    if phentsize < 4 or len(table) < phentsize * phnum:
        return False
    pt_interp = 3
    return all(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], order) != pt_interp
        for i in range(phnum)
    )


def _check_busybox(busybox: Path) -> None:
    hint = "install Debian's busybox-static (apt-get install busybox-static)"
    if not busybox.is_file():
        raise KubehoistError(f"image {BUSYBOX_IMAGE}: {busybox} is missing; {hint}")
    if not is_static_elf(busybox):
        raise KubehoistError(f"image {BUSYBOX_IMAGE}: {busybox} is not a static binary; {hint}")


def busybox_applets(busybox: Path) -> list[str]:
    """Where busybox installs its applets (`busybox --list-full`: `bin/sh`, …)."""
    try:
        proc = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise KubehoistError(f"{busybox}: cannot run: {exc.strerror}") from exc
    applets = sorted(
        {line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()}
    )
    if proc.returncode != 0 or "bin/sh" not in applets:
        raise KubehoistError(f"{busybox} --list-full: no applet list with bin/sh in it")
    return applets


def busybox_entries(busybox: Path, applets: Iterable[str]) -> list[Entry]:
    entries = [*base_files(), file_from("bin/busybox", busybox)]
    entries += [symlink(a, "/bin/busybox") for a in applets if a != "bin/busybox"]
    return entries


def busybox_image(name: str = BUSYBOX_IMAGE, busybox: Path = BUSYBOX_BINARY) -> Recipe:
    """Debian's static busybox at /bin/busybox with a symlink per applet."""
    _check_busybox(busybox)
    key = cache_key("busybox", name, file_digest(busybox, f"image {name}"))
    config = ImageConfig(env=(f"PATH={DEFAULT_PATH}",), cmd=("sh",))
    return Recipe(
        name,
        key,
        _single_layer_image(
            name, config, lambda: busybox_entries(busybox, busybox_applets(busybox))
        ),
    )


# --- the kubehoist image --------------------------------------------------------------


def kubehoist_image(name: str = KUBEHOIST_IMAGE, project: Path = imagebuild.PROJECT_ROOT) -> Recipe:
    """The kubehoist image of the checkout, as `kubehoist image build` makes it: an
    OCI layout archive of the wheel built from the source tree. Keyed by the source
    files, so that an edit rebuilds it (only its small last layer is new)."""
    sources = imagebuild.source_key(project)

    def make(dest: Path) -> None:
        with imagebuild.project_wheel(None, project) as wheel:
            imagebuild.write_kubehoist_image(dest, wheel, name=name, fmt="oci")

    recipe_key = cache_key("kubehoist-oci", name, sources, imagebuild.debian_key())
    return Recipe(name, recipe_key, make, suffix=".oci.tar")


# --- the lab's images -----------------------------------------------------------------


def kubeadm_images(binaries: Binaries, kubernetes_version: str) -> dict[str, str]:
    """The images kubeadm of this version names, by short name (`kube-apiserver`,
    `etcd`, `pause`, `coredns`, …), from `kubeadm config images list`."""
    kubeadm = binaries.path("kubeadm")
    cmd = [str(kubeadm), "config", "images", "list", "--kubernetes-version", kubernetes_version]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise KubehoistError(f"{kubeadm}: cannot run: {exc.strerror}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise KubehoistError(f"{' '.join(cmd[1:])}: failed: {tail}")
    out: dict[str, str] = {}
    for line in proc.stdout.split():
        full = normalize(line)
        out[full.rsplit(":", 1)[0].rsplit("/", 1)[-1]] = full
    missing = [n for n in (*KUBE_IMAGE_PROGRAMS, "pause") if n not in out]
    if missing:
        raise KubehoistError(f"{kubeadm} config images list: no image for {', '.join(missing)}")
    return out


def lab_recipes(binaries: Binaries, kubernetes_version: str) -> list[Recipe]:
    """Every image a lab node needs."""
    names = kubeadm_images(binaries, kubernetes_version)
    recipes = [binary_image(names[p], binaries.path(p), p) for p in KUBE_IMAGE_PROGRAMS]
    recipes += [pause_image(names["pause"]), busybox_image(), kubehoist_image()]
    return recipes


def lab_images(binaries: Binaries, kubernetes_version: str) -> list[Path]:
    """The archives every node imports, building what the cache lacks."""
    return [recipe.ensure() for recipe in lab_recipes(binaries, kubernetes_version)]


@dataclass(frozen=True)
class ImageRow:
    """One line of `kubehoist lab image list`."""

    name: str
    archive: Path | None  # None: not built yet
    size: int | None
    image_id: str | None
    origin: str  # "lab" or "FROM <base>"


def image_table(
    binaries: Binaries, kubernetes_version: str, lab_root: Path | None = None
) -> list[ImageRow]:
    """The lab's images (built or not) and the images built from Dockerfiles."""
    rows: list[ImageRow] = []
    for recipe in lab_recipes(binaries, kubernetes_version):
        if recipe.archive.exists():
            a = read_archive(recipe.archive)
            rows.append(ImageRow(recipe.name, a.path, a.size, a.image_id, "lab"))
        else:
            rows.append(ImageRow(recipe.name, None, None, None, "lab"))
    if lab_root is not None:
        for name, record in sorted(read_index(lab_root).items()):
            path = store_dir(lab_root) / record["archive"]
            a = read_archive(path)
            rows.append(ImageRow(name, path, a.size, a.image_id, f"FROM {record['base']}"))
    return rows


def lab_recipe(name: str, binaries: Binaries, kubernetes_version: str) -> Recipe | None:
    """The lab image of this (normalized) name, if there is one."""
    if name == BUSYBOX_IMAGE:
        return busybox_image()
    if name == normalize(KUBEHOIST_IMAGE):
        return kubehoist_image()
    if not name.startswith("registry.k8s.io/"):
        return None
    by_name = {v: k for k, v in kubeadm_images(binaries, kubernetes_version).items()}
    short = by_name.get(name)
    if short == "pause":
        return pause_image(name)
    if short in KUBE_IMAGE_PROGRAMS:
        return binary_image(name, binaries.path(short), short)
    return None


# --- the lab's image store (images built from Dockerfiles, lab.dockerfile) -----------


def store_dir(lab_root: Path) -> Path:
    return lab_root / "images"


def index_path(lab_root: Path) -> Path:
    return store_dir(lab_root) / "index.json"


def read_index(lab_root: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(index_path(lab_root).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KubehoistError(f"{index_path(lab_root)}: unreadable: {exc}") from exc
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict):
        raise KubehoistError(f"{index_path(lab_root)}: no `images` object")
    return images


def built_images(lab_root: Path) -> dict[str, Path]:
    """Images built with `lab image build`: name -> archive."""
    return {n: store_dir(lab_root) / r["archive"] for n, r in sorted(read_index(lab_root).items())}


# --- importing into a node ------------------------------------------------------------


def _ctr(enter_argv: Sequence[str], ctr: Path, *args: str) -> list[str]:
    return [*enter_argv, str(ctr), "--address", CONTAINERD_SOCKET, "-n", CRI_NAMESPACE, *args]


def import_archives(
    enter_argv: Sequence[str], ctr: Path, archives: Sequence[Path], *, timeout: float = 600
) -> None:
    """Import archives into the containerd of a node (`enter_argv` runs a command in
    it), pinned; then check that each image is listed and unpacked for the default
    snapshotter. The archive goes through stdin, so the node need not see its path."""
    wanted: dict[str, Path] = {}
    for archive in archives:
        names = read_archive(archive).names
        if not names:
            raise KubehoistError(f"image archive {archive}: no RepoTags in manifest.json")
        # --label also updates the labels of an image imported before without them
        cmd = _ctr(enter_argv, ctr, "images", "import", "--label", PINNED_LABEL, "-")
        with open(archive, "rb") as fh:
            _run_ctr(cmd, f"image {names[0]}: importing {archive}", stdin=fh, timeout=timeout)
        wanted.update((normalize(name), archive) for name in names)
    listed = _run_ctr(_ctr(enter_argv, ctr, "images", "ls", "-q"), "ctr images ls", timeout=60)
    # REF TYPE DIGEST STATUS SIZE UNPACKED, with spaces inside STATUS and SIZE
    check = _run_ctr(_ctr(enter_argv, ctr, "images", "check"), "ctr images check", timeout=60)
    unpacked = {f[0]: f[-1] == "true" for f in (ln.split() for ln in check.splitlines()[1:]) if f}
    for name, archive in wanted.items():
        if name not in listed.split():
            raise KubehoistError(
                f"image {name}: not in the node's containerd after importing {archive}"
            )
        if not unpacked.get(name):
            raise KubehoistError(
                f"image {name}: imported from {archive} but not unpacked (ctr images check)"
            )


def _run_ctr(cmd: list[str], what: str, *, timeout: float, stdin: IO[bytes] | None = None) -> str:
    try:
        proc = subprocess.run(
            cmd,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubehoistError(f"{what}: {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise KubehoistError(f"{what} failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return proc.stdout.decode(errors="replace")
