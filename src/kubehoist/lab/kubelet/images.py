"""Images in the lab: the one table that maps image names to local programs, and the
lab image store for images "built" from a Dockerfile of the article's shape.

There is no registry and no image layer in the lab. An image is the host's root
filesystem (seen read-only through an overlay) plus a few files placed on top:
for `registry.k8s.io/kube-controller-manager:*` the lab's kube-controller-manager
binary at `/usr/local/bin/kube-controller-manager`, for `busybox` nothing (the host's
POSIX shell and tools are already there). A built image (`FROM <mapped image>` plus
`ADD`/`COPY`) is its base plus the added files, kept under `<lab-root>/images/`.

`resolve` is pure given the store's contents; `build` writes into the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubehoist.lab.binaries import Binaries

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """An image the lab cannot provide; the message names it."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image name: `registry/repository:tag` with Docker Hub defaults."""

    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        name = image.strip()
        if not name or any(c.isspace() for c in name):
            raise ImageError(f"invalid image name {image!r}")
        name = name.split("@", 1)[0]  # a digest pins nothing in the lab
        tag = "latest"
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = "docker.io", name
        if registry == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        return cls(registry=registry, repository=repository, tag=tag)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def short(self) -> str:
        """The last path element of the repository (`kube-controller-manager`)."""
        return self.repository.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ImageFile:
    """A file or directory placed into the container's root filesystem."""

    target: str  # absolute path inside the container
    source: Path  # on the host


@dataclass(frozen=True)
class Image:
    """What a container's root filesystem and default command are made of."""

    name: str
    program: str  # the table row it came from, e.g. "kube-controller-manager", "busybox"
    files: tuple[ImageFile, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = (("PATH", DEFAULT_PATH),)
    working_dir: str = ""
    binds: tuple[ImageFile, ...] = ()
    """Host directories bound read-only at the same paths (not copied into the layer)."""


# --- the table ------------------------------------------------------------------------

KUBE_REGISTRIES = ("registry.k8s.io", "k8s.gcr.io")
KUBE_PROGRAMS = ("kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd")
SHELL_IMAGES = ("busybox", "alpine", "debian", "ubuntu")


@dataclass(frozen=True)
class TableRow:
    pattern: str  # documentation: which names match
    program: str
    description: str


IMAGE_TABLE: tuple[TableRow, ...] = (
    *(
        TableRow(
            f"registry.k8s.io/{p}:* (also k8s.gcr.io)",
            p,
            f"the lab's {p} binary at /usr/local/bin/{p}; the tag is ignored",
        )
        for p in KUBE_PROGRAMS
    ),
    TableRow("registry.k8s.io/pause:*", "pause", "`sleep infinity`"),
    *(
        TableRow(
            f"{s}:* (Docker Hub)",
            "busybox",
            "the host's root filesystem: its POSIX shell and tools; default command `sh`",
        )
        for s in SHELL_IMAGES
    ),
    TableRow(
        "python:* (Docker Hub)",
        "python",
        "the host's root filesystem; default command the lab's Python interpreter",
    ),
    TableRow(
        "*/kubehoist:* or kubehoist:*",
        "kubehoist",
        "the kubehoist CLI at /usr/local/bin/kubehoist; entrypoint `kubehoist`",
    ),
)


def mapped_program(ref: ImageRef) -> str | None:
    """The table row an image name maps to, or None for an unknown image."""
    if ref.registry in KUBE_REGISTRIES:
        if ref.short in KUBE_PROGRAMS:
            return ref.short
        if ref.short == "pause":
            return "pause"
    if ref.registry == "docker.io" and ref.repository.startswith("library/"):
        if ref.short in SHELL_IMAGES:
            return "busybox"
        if ref.short == "python":
            return "python"
    if ref.short == "kubehoist":
        return "kubehoist"
    return None


MASKED_DIRS = (Path("/tmp"), Path("/run"))
"""Host directories a container does not see (it gets its own /tmp and /run)."""


def interpreter_dirs() -> tuple[ImageFile, ...]:
    """The directories this Python and kubehoist's source live in, where a container
    would not see them (a virtualenv or a checkout under /tmp): bound read-only at the
    same paths, so the lab's `python` and `kubehoist` images run wherever they are."""
    src = Path(__file__).resolve().parents[3]
    wanted = {
        src,
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(sys.executable).resolve().parent.parent,
    }
    masked = sorted(
        d for d in wanted if any(d == m or m in d.parents for m in MASKED_DIRS) and d.is_dir()
    )
    # A directory inside another one already bound needs nothing of its own.
    kept = [d for d in masked if not any(o != d and o in d.parents for o in masked)]
    return tuple(ImageFile(str(d), d) for d in kept)


def program_image(name: str, program: str, binaries: Binaries, *, support_dir: Path) -> Image:
    """The Image of a table row. `support_dir` holds small generated helper scripts."""
    if program in KUBE_PROGRAMS:
        target = f"/usr/local/bin/{program}"
        return Image(
            name=name,
            program=program,
            files=(ImageFile(target, binaries.path(program)),),
            entrypoint=(target,) if program == "etcd" else (),
        )
    if program == "pause":
        return Image(name=name, program=program, entrypoint=("sleep", "infinity"))
    if program == "busybox":
        return Image(name=name, program=program, cmd=("sh",))
    if program == "python":
        return Image(
            name=name,
            program=program,
            files=(
                ImageFile("/usr/local/bin/python3", Path(sys.executable)),
                ImageFile("/usr/local/bin/python", Path(sys.executable)),
            ),
            binds=interpreter_dirs(),
            cmd=("python3",),
        )
    if program == "kubehoist":
        script = support_dir / "kubehoist"
        return Image(
            name=name,
            program=program,
            files=(ImageFile("/usr/local/bin/kubehoist", script),),
            binds=interpreter_dirs(),
            entrypoint=("kubehoist",),
        )
    raise ImageError(f"no program {program!r} in the image table")


def write_support_files(support_dir: Path) -> None:
    """The kubehoist entry script used by the kubehoist image."""
    support_dir.mkdir(parents=True, exist_ok=True)
    script = support_dir / "kubehoist"
    src = str(Path(__file__).resolve().parents[3])
    text = (
        "#!/bin/sh\n"
        f"export PYTHONPATH={shlex.quote(src)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        f'exec {shlex.quote(sys.executable)} -m kubehoist "$@"\n'
    )
    if not script.exists() or script.read_text() != text:
        tmp = script.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(script)


# --- the lab image store --------------------------------------------------------------


def store_dir(lab_root: Path) -> Path:
    return lab_root / "images"


def _key(ref: ImageRef) -> str:
    return hashlib.sha256(ref.name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    """A lab image built from a Dockerfile, as written to `image.json`."""

    name: str
    base: str
    files: tuple[tuple[str, str], ...] = ()  # (target in container, path relative to layer/)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    dockerfile: str = field(default="", compare=False)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "name": self.name,
                    "base": self.base,
                    "files": [list(f) for f in self.files],
                    "entrypoint": None if self.entrypoint is None else list(self.entrypoint),
                    "cmd": None if self.cmd is None else list(self.cmd),
                    "env": [list(e) for e in self.env],
                    "workingDir": self.working_dir,
                    "dockerfile": self.dockerfile,
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> BuiltImage:
        d = json.loads(text)
        return cls(
            name=d["name"],
            base=d["base"],
            files=tuple((str(a), str(b)) for a, b in d["files"]),
            entrypoint=None if d.get("entrypoint") is None else tuple(d["entrypoint"]),
            cmd=None if d.get("cmd") is None else tuple(d["cmd"]),
            env=tuple((str(a), str(b)) for a, b in d.get("env") or ()),
            working_dir=d.get("workingDir") or "",
            dockerfile=d.get("dockerfile") or "",
        )


def lookup_built(lab_root: Path, ref: ImageRef) -> tuple[BuiltImage, Path] | None:
    """A built image of this name in the store, and its layer directory."""
    d = store_dir(lab_root) / _key(ref)
    try:
        built = BuiltImage.from_json((d / "image.json").read_text())
    except FileNotFoundError:
        return None
    return built, d / "layer"


def list_built(lab_root: Path) -> list[BuiltImage]:
    out = []
    for p in sorted(store_dir(lab_root).glob("*/image.json")):
        out.append(BuiltImage.from_json(p.read_text()))
    return out


def resolve(
    image: str,
    *,
    lab_root: Path,
    binaries: Binaries,
    support_dir: Path,
    lookup: Callable[[Path, ImageRef], tuple[BuiltImage, Path] | None] = lookup_built,
    depth: int = 0,
) -> Image:
    """The Image for a pod's `image:`; raises ImageError naming an unknown image."""
    ref = ImageRef.parse(image)
    found = lookup(lab_root, ref)
    if found is not None:
        if depth > 8:
            raise ImageError(f"image {image}: FROM chain too deep")
        built, layer = found
        base = resolve(
            built.base,
            lab_root=lab_root,
            binaries=binaries,
            support_dir=support_dir,
            lookup=lookup,
            depth=depth + 1,
        )
        env = dict(base.env)
        env.update(built.env)
        added = tuple(ImageFile(target, layer / rel) for target, rel in built.files)
        return Image(
            name=ref.name,
            program=base.program,
            files=base.files + added,
            entrypoint=base.entrypoint if built.entrypoint is None else built.entrypoint,
            cmd=(base.cmd if built.entrypoint is None else ()) if built.cmd is None else built.cmd,
            env=tuple(env.items()),
            working_dir=built.working_dir or base.working_dir,
            binds=base.binds,
        )
    program = mapped_program(ref)
    if program is None:
        raise ImageError(
            f'Failed to pull image "{image}": the lab has no image {ref.name} '
            "(neither in the image table nor built with `kubehoist lab image build`)"
        )
    return program_image(ref.name, program, binaries, support_dir=support_dir)


# --- Dockerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    op: str
    args: tuple[str, ...]
    raw: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile (line continuations joined, comments dropped)."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if not full:
            continue
        op, _, rest = full.partition(" ")
        rest = rest.strip()
        if rest.startswith("["):
            try:
                args = tuple(str(a) for a in json.loads(rest))
            except json.JSONDecodeError as exc:
                raise ImageError(f"Dockerfile: bad JSON in {full!r}") from exc
            out.append(Instruction(op.upper(), args, full))
        else:
            out.append(Instruction(op.upper(), tuple(shlex.split(rest)), full))
    if pending.strip():
        raise ImageError("Dockerfile ends with a line continuation")
    return out


def _chown(ins: Instruction) -> tuple[int, int] | None:
    """(uid, gid) of `--chown=UID[:GID]` (a UID alone is also the GID, as in Docker)."""
    for arg in ins.args:
        if arg.startswith("--chown="):
            user, _, group = arg[len("--chown=") :].partition(":")
            if not user.isdigit() or (group and not group.isdigit()):
                raise ImageError(
                    f"Dockerfile: {ins.raw!r}: the lab takes only numeric --chown=UID[:GID]"
                )
            return int(user), int(group or user)
    return None


def plan_build(
    name: str, dockerfile: str
) -> tuple[BuiltImage, list[tuple[str, str, tuple[int, int] | None]]]:
    """The image record and the (source in context, target in image, --chown owner)
    copies to make."""
    ref = ImageRef.parse(name)
    base: str | None = None
    copies: list[tuple[str, str, tuple[int, int] | None]] = []
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: list[tuple[str, str]] = []
    workdir = ""
    for ins in parse_dockerfile(dockerfile):
        if ins.op == "FROM":
            if base is not None:
                raise ImageError("Dockerfile: multi-stage builds are not supported by the lab")
            if not ins.args:
                raise ImageError("Dockerfile: FROM without an image")
            base = ins.args[0]
        elif base is None and ins.op != "ARG":
            raise ImageError(f"Dockerfile: {ins.op} before FROM")
        elif ins.op in ("ADD", "COPY"):
            owner = _chown(ins)
            args = [a for a in ins.args if not a.startswith("--")]
            if len(args) < 2:
                raise ImageError(f"Dockerfile: {ins.raw!r} needs a source and a destination")
            *sources, dest = args
            for src in sources:
                if "://" in src:
                    raise ImageError(f"Dockerfile: {ins.op} from a URL is not supported in the lab")
                if len(sources) > 1 and not dest.endswith("/"):
                    raise ImageError(f"Dockerfile: {ins.raw!r}: destination must end with /")
                target = dest if dest.startswith("/") else f"{workdir or '/'}/{dest}"
                copies.append((src, target, owner))
        elif ins.op == "ENTRYPOINT":
            entrypoint = (
                ins.args
                if ins.raw.split(None, 1)[1].lstrip().startswith("[")
                else ("/bin/sh", "-c", " ".join(ins.args))
            )
        elif ins.op == "CMD":
            cmd = (
                ins.args
                if ins.raw.split(None, 1)[1].lstrip().startswith("[")
                else ("/bin/sh", "-c", " ".join(ins.args))
            )
        elif ins.op == "ENV":
            if len(ins.args) == 2 and "=" not in ins.args[0]:
                env.append((ins.args[0], ins.args[1]))
            else:
                for a in ins.args:
                    k, sep, v = a.partition("=")
                    if not sep:
                        raise ImageError(f"Dockerfile: cannot parse {ins.raw!r}")
                    env.append((k, v))
        elif ins.op == "WORKDIR":
            workdir = ins.args[0] if ins.args else ""
        elif ins.op in ("LABEL", "ARG", "USER", "EXPOSE", "MAINTAINER"):
            continue  # no effect on how the lab runs the image
        else:
            raise ImageError(
                f"Dockerfile: {ins.op} is not supported by the lab image builder "
                "(only FROM, ADD, COPY, ENTRYPOINT, CMD, ENV, WORKDIR)"
            )
    if base is None:
        raise ImageError("Dockerfile: no FROM")
    return (
        BuiltImage(
            name=ref.name,
            base=base,
            entrypoint=entrypoint,
            cmd=cmd,
            env=tuple(env),
            working_dir=workdir,
            dockerfile=dockerfile,
        ),
        copies,
    )


def build(
    lab_root: Path, name: str, context: Path, *, dockerfile: Path | None = None
) -> BuiltImage:
    """Build `name` from `context` into the lab image store (replacing an older build)."""
    dockerfile = dockerfile or context / "Dockerfile"
    try:
        text = dockerfile.read_text()
    except OSError as exc:
        raise ImageError(f"cannot read {dockerfile}: {exc.strerror}") from exc
    record, copies = plan_build(name, text)
    ImageRef.parse(record.base)  # validates the name; the base is resolved at run time
    ref = ImageRef.parse(name)
    final = store_dir(lab_root) / _key(ref)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    layer = tmp / "layer"
    layer.mkdir(parents=True)
    files: list[tuple[str, str]] = []
    ctx = context.resolve()
    for n, (src, target, owner) in enumerate(copies):
        source = (ctx / src).resolve()
        if source != ctx and ctx not in source.parents:
            raise ImageError(f"Dockerfile: {src} is outside the build context")
        if not source.exists():
            raise ImageError(f"Dockerfile: {src}: no such file in the build context {context}")
        if source.is_file() and target.endswith("/"):
            target = target + source.name
        target = target.rstrip("/") or "/"
        rel = str(n)
        if source.is_dir():
            shutil.copytree(source, layer / rel, symlinks=True)
        else:
            shutil.copy2(source, layer / rel)
        if owner is not None:  # kept by the launcher when it places the files
            for path in [layer / rel, *(layer / rel).rglob("*")]:
                os.lchown(path, *owner)
        files.append((target, rel))
    record = BuiltImage(
        name=record.name,
        base=record.base,
        files=tuple(files),
        entrypoint=record.entrypoint,
        cmd=record.cmd,
        env=record.env,
        working_dir=record.working_dir,
        dockerfile=record.dockerfile,
    )
    (tmp / "image.json").write_text(record.to_json())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return record
