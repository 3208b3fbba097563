"""`lab image build`: images from a Dockerfile of the article's shape (FROM a lab
image, ADD/COPY, ENTRYPOINT, CMD, ENV, WORKDIR, USER, LABEL, EXPOSE; no RUN): the
base's layers plus one layer of the copied files, as a docker archive kept in
`<lab-root>/images` and imported into every node's containerd."""

from __future__ import annotations

import json
import os
import re
import shlex
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from kubehoist.cachedir import locked
from kubehoist.errors import KubehoistError
from kubehoist.guard.manifest import DEFAULT_IMAGE as KUBEHOIST_IMAGE
from kubehoist.image.archive import read_archive, write_archive
from kubehoist.image.cache import safe
from kubehoist.image.config import ImageConfig, normalize
from kubehoist.image.layers import (
    DIR,
    Entry,
    Layer,
    Tree,
    directory,
    file_from,
    parents,
    tree_entries,
    tree_of,
    write_layer,
)
from kubehoist.lab.binaries import Binaries, locate
from kubehoist.lab.images import (
    BUSYBOX_IMAGE,
    built_images,
    index_path,
    lab_recipe,
    read_index,
    store_dir,
)
from kubehoist.lab.spec import KUBERNETES_VERSION

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
        for parent in parents(path):
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
                for e in tree_entries(src, dest or ".", owner=c.owner, mode=c.mode):
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
    dest = store / f"{safe(name)}.tar"
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
        index = read_index(lab_root)
        index[name] = {
            "archive": dest.name,
            "base": plan.base if plan.base == "scratch" else normalize(plan.base),
            "dockerfile": str(dockerfile.resolve()),
            "context": str(context.resolve()),
        }
        tmp_index = store / f".index.json.tmp-{os.getpid()}"
        tmp_index.write_text(json.dumps({"images": index}, indent=2, sort_keys=True) + "\n")
        tmp_index.replace(index_path(lab_root))
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
