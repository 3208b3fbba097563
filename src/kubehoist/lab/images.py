"""The lab's container images: real image archives, written by our own code, for the
containerd of every lab node (there is no registry to pull from).

This module owns
- the archive format: docker-archive tarballs (`manifest.json` with Config, RepoTags
  and Layers, a config JSON with `rootfs.diff_ids`) with uncompressed layers, written
  with `tarfile` so that the same inputs give the same bytes (sorted entries, mtime 0,
  owner 0:0 unless told otherwise, empty user/group names, GNU headers without PAX
  times);
- the lab's base images, built once per machine into `cache_root()/images`, keyed by
  a hash of their inputs: kube-apiserver, kube-controller-manager, kube-scheduler and
  etcd (the lab's static binary on a distroless-like base), the sandbox image (our own
  pause program from `gomod/pause`), busybox (Debian's static busybox with one symlink
  per applet) and the kubehoist image (three layers: a Debian root filesystem made by
  mmdebstrap, the project's dependencies and the project itself, both installed with
  `pip install --target`, so that editing the project rebuilds only the small last one);
- `lab image build`: images from a Dockerfile of the article's shape (FROM a lab image,
  ADD/COPY, ENTRYPOINT, CMD, ENV, WORKDIR, USER; no RUN), kept in `<lab-root>/images`;
- importing archives into a node's containerd with `ctr`, pinned so that the kubelet's
  image garbage collection never removes them.

Only the writers are reproducible: the Debian layer and the project's dependencies
depend on what deb.debian.org and PyPI serve on the day they are built, which is why
they are built once and kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final, Literal

from kubehoist.errors import KubehoistError
from kubehoist.guard.manifest import DEFAULT_IMAGE as KUBEHOIST_IMAGE
from kubehoist.lab.binaries import Binaries, cache_root, locate, locked
from kubehoist.lab.spec import KUBERNETES_VERSION

FORMAT: Final = 1
"""Bumped whenever the writers' output changes, so that cached archives are rebuilt."""

ARCHITECTURE: Final = "amd64"
OS: Final = "linux"
STATIC_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BUSYBOX_IMAGE: Final = "docker.io/library/busybox:1.36"
BUSYBOX_BINARY: Final = Path("/bin/busybox")
KUBE_IMAGE_PROGRAMS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")

CONTAINERD_SOCKET: Final = "/run/containerd/containerd.sock"
CRI_NAMESPACE: Final = "k8s.io"
PINNED_LABEL: Final = "io.cri-containerd.pinned=pinned"
"""The CRI plugin reports an image with this label as pinned; the kubelet's image
garbage collection never removes a pinned image."""

PROJECT_ROOT: Final = Path(__file__).resolve().parents[3]
PAUSE_MODULE: Final = Path(__file__).parent / "gomod" / "pause"
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


# --- names ----------------------------------------------------------------------------


def normalize(image: str) -> str:
    """The full name containerd stores an image under: `busybox:1.36` is
    `docker.io/library/busybox:1.36`, a name without a tag is `:latest`."""
    name = image.strip()
    if not name or any(c.isspace() for c in name) or "@" in name:
        raise KubehoistError(f"image name {image!r}: not of the form [registry/]repository[:tag]")
    tag = "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "docker.io", name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    if not tag or not repository or repository != repository.lower():
        raise KubehoistError(f"image name {image!r}: not of the form [registry/]repository[:tag]")
    return f"{registry}/{repository}:{tag}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


# --- layers ---------------------------------------------------------------------------

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
    """An uncompressed layer tar: `size` bytes at `offset` of `path` (a layer file of
    its own, or a member of an image archive). `diff_id` is `sha256:<hex>` of them."""

    path: Path
    offset: int
    size: int
    diff_id: str


def _tarinfo(name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode & 0o7777
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _parents(path: str) -> Iterator[str]:
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
        for parent in _parents(path):
            if parent not in by_path and parent not in lower_dirs:
                by_path[parent] = directory(parent)
            elif parent in by_path and by_path[parent].kind != DIR:
                raise KubehoistError(f"layer {dest}: {parent} is not a directory but has {path}")
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(by_path):
            e = by_path[path]
            if e.kind == DIR:
                tar.addfile(_tarinfo(path, tarfile.DIRTYPE, e.mode, e.uid, e.gid))
            elif e.kind == SYMLINK:
                info = _tarinfo(path, tarfile.SYMTYPE, 0o777, e.uid, e.gid)
                info.linkname = e.link
                tar.addfile(info)
            elif e.data is not None:
                info = _tarinfo(path, tarfile.REGTYPE, e.mode, e.uid, e.gid)
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            elif e.source is not None:
                info = _tarinfo(path, tarfile.REGTYPE, e.mode, e.uid, e.gid)
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


@contextmanager
def _layer_tar(layer: Layer) -> Iterator[tarfile.TarFile]:
    with open(layer.path, "rb") as fh:
        fh.seek(layer.offset)
        with tarfile.open(fileobj=fh, mode="r:") as tar:
            yield tar


# --- image config and archives --------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's config (what `docker inspect` shows as Config)."""

    env: tuple[str, ...] = ()  # "KEY=value"
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()

    def document(self, diff_ids: Sequence[str]) -> dict[str, Any]:
        config: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint is not None:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            config["Cmd"] = list(self.cmd)
        if self.working_dir:
            config["WorkingDir"] = self.working_dir
        if self.user:
            config["User"] = self.user
        if self.labels:
            config["Labels"] = dict(self.labels)
        if self.exposed_ports:
            config["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        return {
            "architecture": ARCHITECTURE,
            "os": OS,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ImageConfig:
        c = doc.get("config") or {}
        entrypoint, cmd = c.get("Entrypoint"), c.get("Cmd")
        return cls(
            env=tuple(str(e) for e in c.get("Env") or ()),
            entrypoint=None if entrypoint is None else tuple(str(a) for a in entrypoint),
            cmd=None if cmd is None else tuple(str(a) for a in cmd),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in (c.get("Labels") or {}).items())),
            exposed_ports=tuple(sorted(str(p) for p in c.get("ExposedPorts") or {})),
        )

    def with_env(self, key: str, value: str) -> ImageConfig:
        env = [e for e in self.env if e.partition("=")[0] != key]
        return replace(self, env=(*env, f"{key}={value}"))


def _canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_archive(dest: Path, name: str, config: ImageConfig, layers: Sequence[Layer]) -> str:
    """Write a docker-archive tarball of one image at `dest`; returns its image id
    (`sha256:` of the config JSON, what `crictl images` shows as IMAGE ID)."""
    diff_ids = [layer.diff_id for layer in layers]
    config_bytes = _canonical_json(config.document(diff_ids))
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_paths = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [name], "Layers": layer_paths}]
    members: dict[str, bytes | Layer] = {
        f"{config_hex}.json": config_bytes,
        "manifest.json": _canonical_json(manifest),
    }
    for path, layer in zip(layer_paths, layers, strict=True):
        members[path] = layer
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(members):
            info = _tarinfo(path, tarfile.REGTYPE, 0o644, 0, 0)
            content = members[path]
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            info.size = content.size
            with open(content.path, "rb") as fh:
                fh.seek(content.offset)
                tar.addfile(info, fh)
    return f"sha256:{config_hex}"


@dataclass(frozen=True)
class Archive:
    """What an image archive holds."""

    path: Path
    names: tuple[str, ...]
    image_id: str  # sha256:<hex of the config JSON>
    config: ImageConfig
    layers: tuple[Layer, ...]
    size: int


def read_archive(path: Path) -> Archive:
    """Read an archive written by `write_archive` (or any one-image docker archive)."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
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
                layers.append(Layer(path, m.offset_data, m.size, str(diff_id)))
    except (OSError, tarfile.TarError, ValueError, KeyError, TypeError) as exc:
        raise KubehoistError(f"image archive {path}: unreadable: {exc}") from exc
    return Archive(
        path=path,
        names=tuple(str(n) for n in entry.get("RepoTags") or ()),
        image_id=f"sha256:{hashlib.sha256(config_bytes).hexdigest()}",
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


# --- the cache ------------------------------------------------------------------------


def images_cache() -> Path:
    return cache_root() / "images"


def _key(*parts: object) -> str:
    return hashlib.sha256(_canonical_json([FORMAT, *parts])).hexdigest()[:20]


def _file_digest(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise KubehoistError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def _build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, made by `build(tmp)` under a lock and renamed into place unless present."""
    if dest.exists():
        return dest
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
def _workdir(prefix: str) -> Iterator[Path]:
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

    @property
    def archive(self) -> Path:
        return images_cache() / f"{_safe(self.name)}-{self.key}.tar"

    def ensure(self) -> Path:
        """The archive, built unless the cache has it; archives of older keys of the
        same name are removed once they are an hour old (a running import may still
        read a younger one)."""
        if self.archive.exists():
            return self.archive
        _build_once(self.archive, self.make)
        _prune(self.archive, f"{_safe(self.name)}-", ".tar")
        return self.archive


def _prune(keep: Path, prefix: str, suffix: str) -> None:
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


def _single_layer_image(
    name: str, config: ImageConfig, entries: Callable[[], Iterable[Entry]]
) -> Callable[[Path], None]:
    def make(dest: Path) -> None:
        with _workdir("layer") as work:
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
    key = _key("binary", name, program, _file_digest(binary, f"image {name}"))
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
    digest = _key("pause", *((p.name, _file_digest(p, "pause")) for p in _pause_sources()))
    dest = images_cache() / f"pause-{digest}"
    if not dest.exists():
        _build_once(dest, _build_pause)
        _prune(dest, "pause-", "")
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
    key = _key("pause-image", name, _file_digest(binary, f"image {name}"))
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
    key = _key("busybox", name, _file_digest(busybox, f"image {name}"))
    config = ImageConfig(env=(f"PATH={DEFAULT_PATH}",), cmd=("sh",))
    return Recipe(
        name,
        key,
        _single_layer_image(
            name, config, lambda: busybox_entries(busybox, busybox_applets(busybox))
        ),
    )


# --- the kubehoist image --------------------------------------------------------------


def debian_layer() -> Layer:
    """Debian's root filesystem with python3, made by mmdebstrap, cached as a layer."""
    dest = images_cache() / f"debian-{DEBIAN_SUITE}-{_debian_key()}.tar"
    return layer_of(_build_once(dest, _build_debian))


def _build_debian(dest: Path) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise KubehoistError(
            f"image {KUBEHOIST_IMAGE}: no `mmdebstrap` on PATH (apt-get install mmdebstrap)"
        )
    with _workdir("mmdebstrap") as work:
        raw = work / "rootfs.tar"
        log = images_cache() / "mmdebstrap.log"
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
                f"image {KUBEHOIST_IMAGE}: mmdebstrap failed (exit {proc.returncode}): "
                f"{tail} (full log: {log})"
            )
        normalize_rootfs(raw, dest)


def normalize_rootfs(src: Path, dest: Path) -> None:
    """Copy a root filesystem tarball as a layer: names without `./`, mtime 0, no PAX
    headers, nothing below /dev (the runtime mounts its own /dev)."""
    with tarfile.open(src, "r:") as tin, tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or name == "." or name.startswith("dev/"):
                continue
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                continue
            info = _tarinfo(name, m.type, m.mode, m.uid, m.gid)
            info.linkname = m.linkname.removeprefix("./") if m.islnk() else m.linkname
            if m.isfile():
                info.size = m.size
                tout.addfile(info, tin.extractfile(m))
            else:
                tout.addfile(info)


def project_files(project: Path = PROJECT_ROOT) -> list[Path]:
    """The files the project's wheel is built from (relative to `project`)."""
    if not (project / "pyproject.toml").is_file() or not (project / "src/kubehoist").is_dir():
        raise KubehoistError(
            f"image {KUBEHOIST_IMAGE}: no kubehoist source tree at {project} "
            "(the image is built from a checkout)"
        )
    files = [Path(n) for n in ("pyproject.toml", "README.md") if (project / n).is_file()]
    for path in sorted((project / "src/kubehoist").rglob("*")):
        rel = path.relative_to(project)
        if "__pycache__" in rel.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        files.append(rel)
    return files


def project_dependencies(project: Path = PROJECT_ROOT) -> list[str]:
    """The project's runtime requirements, as pyproject.toml lists them."""
    path = project / "pyproject.toml"
    try:
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise KubehoistError(f"{path}: no [project] dependencies: {exc}") from exc
    return [str(d) for d in deps]


def kubehoist_image(name: str = KUBEHOIST_IMAGE, project: Path = PROJECT_ROOT) -> Recipe:
    """Debian with python3 (layer 1), the project's dependencies (layer 2, keyed by
    pyproject's list of them) and the project itself with its launchers (layer 3,
    keyed by its source files), so that an edit rebuilds only the small last layer."""
    sources = [
        (str(rel), _file_digest(project / rel, f"image {name}")) for rel in project_files(project)
    ]
    deps = project_dependencies(project)
    key = _key("kubehoist", name, sources, _debian_key(), _deps_key(deps))
    config = ImageConfig(
        env=(f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"),
        entrypoint=("kubehoist",),
    )

    def make(dest: Path) -> None:
        base = debian_layer()
        deps_layer = dependencies_layer(deps, lower=base)
        with _workdir("kubehoist") as work:
            site = work / "site"
            install_project(project, site, work)
            lower = tree_of([base, deps_layer]).dirs
            layer = write_layer(site_entries(site), work / "layer.tar", lower_dirs=lower)
            write_archive(dest, name, config, [base, deps_layer, layer])

    return Recipe(name, key, make)


def _debian_key() -> str:
    return _key("mmdebstrap", *MMDEBSTRAP_ARGS)


def _deps_key(deps: Sequence[str]) -> str:
    return _key("dependencies", sorted(deps), PIP_TARGET_ARGS, SITE_DIR, SITE_PTH)


def dependencies_layer(deps: Sequence[str], *, lower: Layer) -> Layer:
    """The project's dependencies under /usr/local/lib/kubehoist, cached as a layer."""
    dest = images_cache() / f"kubehoist-dependencies-{_deps_key(deps)}.tar"

    def make(tmp: Path) -> None:
        with _workdir("dependencies") as work:
            site = work / "site"
            _pip_install(site, list(deps))
            entries = [
                directory(SITE_DIR),
                *_tree_entries(site, SITE_DIR, owner=None, mode=None),
                # so that the image's python3 (not only the launchers) finds them
                file_data(SITE_PTH, f"/{SITE_DIR}\n".encode()),
            ]
            write_layer(entries, tmp, lower_dirs=tree_of([lower]).dirs)

    if not dest.exists():
        _build_once(dest, make)
        _prune(dest, "kubehoist-dependencies-", ".tar")
    return layer_of(dest)


def install_project(project: Path, site: Path, work: Path) -> None:
    """Build the project's wheel from a copy of its files (so that the checkout is left
    alone), then `pip install --no-deps --target` it."""
    copy = work / "project"
    for rel in project_files(project):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, copy / rel)
    wheels = work / "wheels"
    _run_pip([*_PIP, "wheel", "--no-deps", "-w", str(wheels), str(copy)], "pip wheel")
    wheel = sorted(wheels.glob("kubehoist-*.whl"))
    if len(wheel) != 1:
        raise KubehoistError(
            f"image {KUBEHOIST_IMAGE}: pip wheel made {len(wheel)} kubehoist wheels"
        )
    _pip_install(site, ["--no-deps", str(wheel[0])])
    for direct_url in site.glob("*.dist-info/direct_url.json"):  # names our temp directory
        direct_url.unlink()
        record = direct_url.with_name("RECORD")
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if "/direct_url.json," not in ln))


_PIP: Final = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet")


def _pip_install(site: Path, args: list[str]) -> None:
    """`pip install --target` for CPython 3.11 on manylinux2014 x86_64, whatever the
    host's interpreter, without byte-code (it would not be reproducible)."""
    _run_pip(
        [*_PIP, "install", "--no-compile", "--no-warn-script-location", "--target", str(site),
         *PIP_TARGET_ARGS, *args],
        "pip install",
    )  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts for the host's python


def _run_pip(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise KubehoistError(f"image {KUBEHOIST_IMAGE}: {what} failed: {tail}")


def launcher() -> bytes:
    """/usr/local/bin/kubehoist (and kubectl-hoist) in the kubehoist image."""
    return (
        "#!/usr/bin/python3 -I\n"
        "# kubehoist in the kubehoist image (written by kubehoist.lab.images).\n"
        "import sys\n\n"
        f"sys.path.insert(0, '/{SITE_DIR}')\n"
        "from kubehoist.cli import main\n\n"
        "main()\n"
    ).encode()


def site_entries(site: Path) -> list[Entry]:
    """The site directory at /usr/local/lib/kubehoist plus the two launchers."""
    entries = _tree_entries(site, SITE_DIR, owner=None, mode=None)
    entries += [
        file_data("usr/local/bin/kubehoist", launcher(), 0o755),
        file_data("usr/local/bin/kubectl-hoist", launcher(), 0o755),
    ]
    return entries


def _tree_entries(
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
        for name, record in sorted(_read_index(lab_root).items()):
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


# --- images from a Dockerfile ---------------------------------------------------------

SUPPORTED: Final = (
    "FROM", "ADD", "COPY", "ENTRYPOINT", "CMD", "ENV", "WORKDIR", "USER", "LABEL", "ARG",
    "EXPOSE", "MAINTAINER",
)  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, where the instruction starts
    op: str
    rest: str  # everything after the instruction word, continuations joined
    args: tuple[str, ...]  # the JSON array, or `rest` split like a shell would
    json_form: bool


def parse_dockerfile(text: str, source: str = "Dockerfile") -> list[Instruction]:
    """Instructions of a Dockerfile: continuation lines joined, comments dropped. An
    error is one line `<source>:<line>: …`."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append(_instruction(" ".join(p for p in pending if p), start, source))
        pending = []
    if pending:
        raise KubehoistError(f"{source}:{start}: the file ends inside a line continuation")
    return out


def _instruction(full: str, line: int, source: str) -> Instruction:
    word, _, rest = full.partition(" ")
    op, rest = word.upper(), rest.strip()
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise KubehoistError(f"{source}:{line}: {op}: bad JSON array: {exc.msg}") from exc
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise KubehoistError(f"{source}:{line}: {op}: the JSON form takes strings only")
        return Instruction(line, op, rest, tuple(parsed), True)
    try:
        args = tuple(shlex.split(rest))
    except ValueError as exc:
        raise KubehoistError(f"{source}:{line}: {op}: cannot split arguments: {exc}") from exc
    return Instruction(line, op, rest, args, False)


@dataclass(frozen=True)
class Copy:
    """One ADD/COPY: sources in the build context, destination in the image."""

    line: int
    op: str
    sources: tuple[str, ...]
    dest: str  # absolute (relative ones are joined to the WORKDIR in effect)
    owner: tuple[int, int] | None
    mode: int | None


@dataclass(frozen=True)
class Plan:
    """What a Dockerfile asks for: a base, copies, and config changes."""

    base: str
    copies: tuple[Copy, ...]
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str | None = None
    user: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()

    def config(self, base: ImageConfig) -> ImageConfig:
        """The new image's config: this Dockerfile's settings over the base's. As in
        Docker, an ENTRYPOINT here drops the base's CMD."""
        config = base
        for key, value in self.env:
            config = config.with_env(key, value)
        cmd = config.cmd if self.entrypoint is None else None
        labels = dict(config.labels)
        labels.update(self.labels)
        return replace(
            config,
            entrypoint=config.entrypoint if self.entrypoint is None else self.entrypoint,
            cmd=cmd if self.cmd is None else self.cmd,
            working_dir=config.working_dir if self.working_dir is None else self.working_dir,
            user=config.user if self.user is None else self.user,
            labels=tuple(sorted(labels.items())),
            exposed_ports=tuple(sorted({*config.exposed_ports, *self.exposed_ports})),
        )


def plan_dockerfile(text: str, source: str = "Dockerfile") -> Plan:
    """Check a Dockerfile against what the lab builds and say what it asks for."""
    base: str | None = None
    copies: list[Copy] = []
    env: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []
    ports: list[str] = []
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str | None = None
    user: str | None = None
    for ins in parse_dockerfile(text, source):
        where = f"{source}:{ins.line}"
        if ins.op == "RUN":
            raise KubehoistError(
                f"{where}: RUN is not supported: the lab builds images without running "
                "anything (put the files in the build context and COPY them)"
            )
        if ins.op not in SUPPORTED:
            raise KubehoistError(
                f"{where}: {ins.op} is not supported by the lab image builder "
                f"(it takes {', '.join(SUPPORTED)})"
            )
        if ins.op == "FROM":
            if base is not None:
                raise KubehoistError(
                    f"{where}: a second FROM: multi-stage builds are not supported"
                )
            if any(a.startswith("--") for a in ins.args):
                raise KubehoistError(f"{where}: FROM takes no flags in the lab")
            if len(ins.args) not in (1, 3) or (len(ins.args) == 3 and ins.args[1].upper() != "AS"):
                raise KubehoistError(f"{where}: FROM takes one image (and `AS name`)")
            base = ins.args[0]
            continue
        if base is None and ins.op != "ARG":
            raise KubehoistError(f"{where}: {ins.op} before FROM")
        if ins.op in ("ADD", "COPY"):
            copies.append(_plan_copy(ins, where, workdir or "/"))
        elif ins.op in ("ENTRYPOINT", "CMD"):
            argv = ins.args if ins.json_form else ("/bin/sh", "-c", ins.rest)
            if not argv or (not ins.json_form and not ins.rest):
                raise KubehoistError(f"{where}: {ins.op} without a command")
            if ins.op == "ENTRYPOINT":
                entrypoint = argv
            else:
                cmd = argv
        elif ins.op in ("ENV", "LABEL"):
            (env if ins.op == "ENV" else labels).extend(_pairs(ins, where))
        elif ins.op == "WORKDIR":
            if len(ins.args) != 1:
                raise KubehoistError(f"{where}: WORKDIR takes one path")
            workdir = _join(workdir or "/", ins.args[0])
        elif ins.op == "USER":
            if len(ins.args) != 1:
                raise KubehoistError(f"{where}: USER takes one user[:group]")
            user = ins.args[0]
        elif ins.op == "EXPOSE":
            for port in ins.args:
                if not re.fullmatch(r"\d+(/(tcp|udp|sctp))?", port):
                    raise KubehoistError(f"{where}: EXPOSE {port}: not PORT[/PROTOCOL]")
                ports.append(port if "/" in port else f"{port}/tcp")
    if base is None:
        raise KubehoistError(f"{source}: no FROM")
    return Plan(
        base=base,
        copies=tuple(copies),
        env=tuple(env),
        entrypoint=entrypoint,
        cmd=cmd,
        working_dir=workdir,
        user=user,
        labels=tuple(labels),
        exposed_ports=tuple(ports),
    )


def _join(base: str, path: str) -> str:
    joined = path if path.startswith("/") else f"{base.rstrip('/')}/{path}"
    parts: list[str] = []
    for p in joined.split("/"):
        if p == "..":
            if parts:
                parts.pop()
        elif p not in ("", "."):
            parts.append(p)
    return "/" + "/".join(parts) + ("/" if path.endswith("/") and parts else "")


def _pairs(ins: Instruction, where: str) -> list[tuple[str, str]]:
    if not ins.args:
        raise KubehoistError(f"{where}: {ins.op} without KEY=value")
    if "=" not in ins.args[0]:  # the old form `ENV KEY value with spaces`
        key, _, value = ins.rest.partition(" ")
        if not value.strip():
            raise KubehoistError(f"{where}: {ins.op} {key}: no value")
        return [(key, value.strip())]
    out = []
    for arg in ins.args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise KubehoistError(f"{where}: {ins.op}: {arg!r} is not KEY=value")
        out.append((key, value))
    return out


def _plan_copy(ins: Instruction, where: str, workdir: str) -> Copy:
    owner: tuple[int, int] | None = None
    mode: int | None = None
    args = list(ins.args)
    while args and args[0].startswith("--"):
        flag, _, value = args.pop(0).partition("=")
        if flag == "--chown":
            user, _, group = value.partition(":")
            if not user.isdigit() or (group and not group.isdigit()):
                raise KubehoistError(f"{where}: {ins.op} --chown={value}: the lab takes UID[:GID]")
            owner = (int(user), int(group or user))
        elif flag == "--chmod":
            if not re.fullmatch(r"[0-7]{3,4}", value):
                raise KubehoistError(f"{where}: {ins.op} --chmod={value}: the lab takes octal")
            mode = int(value, 8)
        else:
            raise KubehoistError(f"{where}: {ins.op} {flag}: not supported by the lab")
    if len(args) < 2:
        raise KubehoistError(f"{where}: {ins.op} needs a source and a destination")
    *sources, dest = args
    for src in sources:
        if "://" in src or src.startswith("git@"):
            raise KubehoistError(f"{where}: {ins.op} {src}: only files of the build context")
    if len(sources) > 1 and not dest.endswith("/"):
        raise KubehoistError(f"{where}: {ins.op} of several sources: {dest} must end with /")
    return Copy(ins.line, ins.op, tuple(sources), _join(workdir, dest), owner, mode)


# --- applying a plan ------------------------------------------------------------------


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
        with _layer_tar(layer) as tar:
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


def copy_entries(plan: Plan, context: Path, tree: Tree, source: str) -> list[Entry]:
    """The new layer's entries for the plan's copies (and its WORKDIR)."""
    ctx = context.resolve()
    entries: list[Entry] = []
    new_dirs: set[str] = set()

    def is_dir(path: str) -> bool:
        return path in tree.dirs or path in new_dirs

    def add_dir(path: str, owner: tuple[int, int] | None) -> None:
        if path and not is_dir(path):
            uid, gid = owner or (0, 0)
            entries.append(directory(path, 0o755, uid, gid))
            new_dirs.add(path)
        for parent in _parents(path):
            new_dirs.add(parent)

    for c in plan.copies:
        where = f"{source}:{c.line}"
        sources = _expand(c, ctx, where)
        dest = tree.resolve(c.dest)
        into_dir = c.dest.endswith("/") or len(sources) > 1 or is_dir(dest)
        for src in sources:
            if c.op == "ADD" and src.is_file() and tarfile.is_tarfile(src):
                raise KubehoistError(
                    f"{where}: ADD {src.relative_to(ctx)}: a local archive, which Docker "
                    "would unpack; the lab does not (unpack it into the context and COPY it)"
                )
            if src.is_dir():
                add_dir(dest, c.owner)
                for e in _tree_entries(src, dest or ".", owner=c.owner, mode=c.mode):
                    entries.append(e)
                    if e.kind == DIR:
                        new_dirs.add(e.path)
            else:
                target = f"{dest}/{src.name}" if into_dir else dest
                if into_dir:
                    add_dir(dest, c.owner)
                uid, gid = c.owner or (0, 0)
                mode = c.mode if c.mode is not None else src.stat().st_mode
                entries.append(file_from(target.lstrip("/"), src, mode, uid, gid))
    if plan.working_dir is not None:
        add_dir(tree.resolve(plan.working_dir), None)
    return entries


def _expand(c: Copy, ctx: Path, where: str) -> list[Path]:
    out: list[Path] = []
    for src in c.sources:
        if any(ch in src for ch in "*?["):
            matches = sorted(ctx.glob(src.lstrip("/")))
            if not matches:
                raise KubehoistError(f"{where}: {c.op} {src}: no file in the build context matches")
        else:
            matches = [ctx / src.lstrip("/")]
        for m in matches:
            path = m.resolve()
            if path != ctx and ctx not in path.parents:
                raise KubehoistError(f"{where}: {c.op} {src}: outside the build context {ctx}")
            if not path.exists():
                raise KubehoistError(
                    f"{where}: {c.op} {src}: no such file in the build context {ctx}"
                )
            out.append(path)
    return out


# --- the lab's image store (images built from Dockerfiles) ----------------------------


def store_dir(lab_root: Path) -> Path:
    return lab_root / "images"


def _index_path(lab_root: Path) -> Path:
    return store_dir(lab_root) / "index.json"


def _read_index(lab_root: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(_index_path(lab_root).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KubehoistError(f"{_index_path(lab_root)}: unreadable: {exc}") from exc
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict):
        raise KubehoistError(f"{_index_path(lab_root)}: no `images` object")
    return images


def built_images(lab_root: Path) -> dict[str, Path]:
    """Images built with `lab image build`: name -> archive."""
    return {n: store_dir(lab_root) / r["archive"] for n, r in sorted(_read_index(lab_root).items())}


def build_from_dockerfile(
    lab_root: Path,
    tag: str,
    dockerfile: Path,
    context: Path,
    *,
    binaries: Binaries | None = None,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> Path:
    """Build `tag` from a Dockerfile over a lab image: the base's layers plus one layer
    of the copied files, into `<lab_root>/images/`. Returns the archive."""
    name = normalize(tag)
    try:
        text = dockerfile.read_text()
    except OSError as exc:
        raise KubehoistError(f"{dockerfile}: cannot read: {exc.strerror}") from exc
    plan = plan_dockerfile(text, str(dockerfile))
    if not context.is_dir():
        raise KubehoistError(f"build context {context}: not a directory")
    base_layers: tuple[Layer, ...] = ()
    base_config = ImageConfig()
    if plan.base != "scratch":
        base_archive = _base_archive(lab_root, plan.base, dockerfile, binaries, kubernetes_version)
        base = read_archive(base_archive)
        base_layers, base_config = base.layers, base.config
    store = store_dir(lab_root)
    store.mkdir(parents=True, exist_ok=True)
    dest = store / f"{_safe(name)}.tar"
    tree = tree_of(base_layers)
    with locked(store / ".lock"):
        tmp_layer = store / f".{dest.name}.layer-{os.getpid()}"
        tmp = store / f".{dest.name}.tmp-{os.getpid()}"
        try:
            layer = write_layer(
                copy_entries(plan, context, tree, str(dockerfile)), tmp_layer, lower_dirs=tree.dirs
            )
            write_archive(tmp, name, plan.config(base_config), [*base_layers, layer])
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
            tmp_layer.unlink(missing_ok=True)
        index = _read_index(lab_root)
        index[name] = {
            "archive": dest.name,
            "base": plan.base if plan.base == "scratch" else normalize(plan.base),
            "dockerfile": str(dockerfile.resolve()),
            "context": str(context.resolve()),
        }
        tmp_index = store / f".index.json.tmp-{os.getpid()}"
        tmp_index.write_text(json.dumps({"images": index}, indent=2, sort_keys=True) + "\n")
        tmp_index.replace(_index_path(lab_root))
    return dest


def _base_archive(
    lab_root: Path,
    base: str,
    dockerfile: Path,
    binaries: Binaries | None,
    kubernetes_version: str,
) -> Path:
    name = normalize(base)
    built = built_images(lab_root)
    if name in built:
        return built[name]
    recipe = lab_recipe(name, binaries or locate(kubernetes_version), kubernetes_version)
    if recipe is None:
        raise KubehoistError(
            f"{dockerfile}: FROM {base}: not a lab image (the lab has {BUSYBOX_IMAGE}, "
            f"{normalize(KUBEHOIST_IMAGE)}, kubeadm's images of Kubernetes {kubernetes_version} "
            "and the images built with `kubehoist lab image build`)"
        )
    return recipe.ensure()


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
