"""The container launcher: the program the lab kubelet starts for every container.

`python -m kubehoist.lab.kubelet.launcher SPEC.json` joins the pod's network namespace,
makes new mount, UTS, IPC and PID namespaces and forks the container's first process
(PID 1 of its namespace), which builds the container's root filesystem and execs the
program. The root filesystem is an overlay whose lower layer is the host's `/` and
whose upper layer is a tmpfs private to the container, so nothing on the host outside
the lab root is ever changed: every mount lives in the container's own mount namespace
and disappears with it. Then come the image's files, /proc, /dev (a tmpfs of the
container's own holding the host's devices, so that nothing made there, such as the
mount point of the termination message file, reaches the host's /dev), /sys, the
volumes and the termination message file at their mount paths, /etc/hosts and
/etc/hostname, and pivot_root.

The launcher stays as the parent of that process: it forwards signals to it and exits
with its status (128+N for signal N), so the kubelet sees one child per container.
Both die with their parent (PR_SET_PDEATHSIG): when the kubelet's process dies the
launcher dies, and when the launcher dies its child, PID 1, dies and the kernel kills
every other process of the container's PID namespace.

Start errors (a missing program, a failed mount) exit with START_ERROR_EXIT after
printing `launcher: <reason>` to stderr (the container's log).

Keep this module free of heavy imports: it runs once per container start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubehoist.lab.kubelet import linux

START_ERROR_EXIT = 128
PARENT_ENV = "KUBEHOIST_LAUNCHER_PARENT"


@dataclass(frozen=True)
class Mount:
    source: str  # on the host
    target: str  # inside the container
    read_only: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the launcher needs; written as JSON by the kubelet."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    rootfs: str  # an empty directory under the lab root: the container's tmpfs goes here
    hostname: str
    pid_file: str
    netns: str = ""  # path of the network namespace to join ("" = stay)
    working_dir: str = ""
    image_files: tuple[Mount, ...] = ()  # directories are copied, files bound read-only
    mounts: tuple[Mount, ...] = ()
    hosts: str = ""  # content of /etc/hosts ("" = leave the host's)
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    read_only_root: bool = False
    tmpfs_size: str = "512m"
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        d = json.loads(text)
        return cls(
            argv=tuple(d["argv"]),
            env=tuple((str(k), str(v)) for k, v in d["env"]),
            rootfs=d["rootfs"],
            hostname=d["hostname"],
            pid_file=d["pid_file"],
            netns=d.get("netns", ""),
            working_dir=d.get("working_dir", ""),
            image_files=tuple(Mount(**m) for m in d.get("image_files", ())),
            mounts=tuple(Mount(**m) for m in d.get("mounts", ())),
            hosts=d.get("hosts", ""),
            run_as_user=d.get("run_as_user"),
            run_as_group=d.get("run_as_group"),
            supplemental_groups=tuple(int(g) for g in d.get("supplemental_groups", ())),
            read_only_root=bool(d.get("read_only_root")),
            tmpfs_size=d.get("tmpfs_size", "512m"),
            extra=dict(d.get("extra", {})),
        )


class StartError(Exception):
    pass


def _inside(root: str, path: str) -> str:
    """`path` (absolute, inside the container) as a host path under `root`, with every
    symbolic link on the way resolved as inside the container (an absolute link such as
    Debian's /var/run -> /run starts again at `root`), so that no path ever leads out
    of the container's root onto the host."""
    todo = [p for p in Path("/" + path).parts[1:] if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise StartError(f"path {path!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in Path(target).parts if p not in ("", ".", "/")] + todo
            continue
        done.append(part)
    return os.path.join(root, *done)


def _ensure_target(target: str, source_is_dir: bool) -> None:
    # `target` comes from _inside: no component of it is a symbolic link.
    if source_is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "a"):
                pass


def _bind(source: str, target: str, read_only: bool) -> None:
    if not os.path.exists(source):
        raise StartError(f"mount source {source} does not exist")
    _ensure_target(target, os.path.isdir(source))
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if read_only:
        linux.mount("none", target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)


def build_root(spec: LaunchSpec) -> str:
    """Make the container's root filesystem; return its path (still under the host /)."""
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    base = spec.rootfs
    linux.mount("tmpfs", base, "tmpfs", 0, f"size={spec.tmpfs_size},mode=0755")
    upper, work, root = (os.path.join(base, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.mkdir(d)
    linux.mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")
    # The host's /tmp and /run are not the container's.
    for d in ("tmp", "run"):
        target = _inside(root, d)
        os.makedirs(target, exist_ok=True)
        linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")
    for f in spec.image_files:
        if os.path.isdir(f.source):
            _copy_layer(root, f.source, f.target)
        else:
            _bind(f.source, _inside(root, f.target), True)
    linux.mount(
        "proc", _inside(root, "proc"), "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    )
    _private_dev(_inside(root, "dev"))
    linux.mount("/sys", _inside(root, "sys"), None, linux.MS_BIND | linux.MS_REC)
    for m in spec.mounts:
        _bind(m.source, _inside(root, m.target), m.read_only)
    return root


def _private_dev(target: str) -> None:
    """The container's /dev: a tmpfs of its own with the host's /dev in it, every device
    node and directory bound (a directory with what is mounted below it: pts, shm,
    mqueue, ...) and every symbolic link copied; regular files are left out. Files the
    container or its mounts create in /dev stay in the container."""
    os.makedirs(target, exist_ok=True)
    linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID, "mode=0755,size=65536k")
    for entry in os.scandir("/dev"):
        dest = os.path.join(target, entry.name)
        try:
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), dest)
            elif entry.is_dir():
                os.mkdir(dest)
                linux.mount(entry.path, dest, None, linux.MS_BIND | linux.MS_REC)
            elif not entry.is_file():
                with open(dest, "a"):
                    pass
                linux.mount(entry.path, dest, None, linux.MS_BIND)
        except OSError:  # gone meanwhile, or not bindable: the container goes without
            with contextlib.suppress(OSError):
                (os.rmdir if os.path.isdir(dest) else os.unlink)(dest)


def _copy_owners(source: str, target: str, *, top: bool) -> None:
    """copytree keeps modes, not owners: give each copy its source's owner (a build's
    `COPY --chown`); a directory that existed before the copy keeps its own."""
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        names: list[str | None] = [*dirnames, *filenames]
        if rel != "." or top:
            names.insert(0, None)
        for name in names:
            src = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(src)
            os.lchown(os.path.normpath(os.path.join(target, rel, name or "")), st.st_uid, st.st_gid)


def _copy_layer(root: str, source: str, target: str) -> None:
    """Copy a built image's directory into the container's writable layer. The copy
    runs chrooted into the container's root, so that a symbolic link met on the way
    (such as /etc/ssl/certs/*) resolves inside the container, never on the host."""
    staging = os.path.join(root, ".kh-layer")
    os.makedirs(staging, exist_ok=True)
    linux.mount(source, staging, None, linux.MS_BIND | linux.MS_REC)
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.chroot(root)
                os.chdir("/")
                existed = os.path.isdir(target)
                shutil.copytree("/.kh-layer", target, symlinks=True, dirs_exist_ok=True)
                _copy_owners("/.kh-layer", target, top=not existed)
            except BaseException as exc:
                print(f"launcher: copying image files to {target}: {exc}", file=sys.stderr)
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise StartError(f"copying the image's files to {target} failed")
    finally:
        linux.umount2(staging, linux.MNT_DETACH)
        os.rmdir(staging)


def _finish_root(spec: LaunchSpec) -> None:
    """After pivot_root: /etc/hosts and /etc/hostname (paths now resolve inside the
    container), and the read-only root if asked."""
    os.makedirs("/etc", exist_ok=True)
    for name, text in (("hosts", spec.hosts), ("hostname", spec.hostname + "\n")):
        if not text:
            continue
        path = os.path.join("/etc", name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        Path(path).write_text(text)
    if spec.read_only_root:
        linux.mount("none", "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)


def _container_main(spec: LaunchSpec, err_fd: int) -> None:
    """PID 1 of the container: never returns."""
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        linux.sethostname(spec.hostname)
        root = build_root(spec)
        os.chdir(root)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        _finish_root(spec)
        os.chdir(spec.working_dir or "/")
        if spec.run_as_group is not None or spec.run_as_user is not None:
            os.setgroups(list(spec.supplemental_groups))
            os.setgid(spec.run_as_group if spec.run_as_group is not None else 0)
        if spec.run_as_user is not None:
            os.setuid(spec.run_as_user)
        env = dict(spec.env)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except BaseException as exc:  # report and leave: this is a forked child
        reason = (
            f"exec {spec.argv[0]!r}: {exc.strerror}"
            if isinstance(exc, OSError)
            and not isinstance(exc, StartError)
            and exc.filename == spec.argv[0]
            else str(exc)
        )
        with contextlib.suppress(OSError):
            os.write(err_fd, reason.encode()[:4000])
    os._exit(START_ERROR_EXIT)


def run(spec: LaunchSpec) -> int:
    if not spec.argv:
        print("launcher: no command", file=sys.stderr)
        return START_ERROR_EXIT
    if spec.netns:
        fd = os.open(spec.netns, os.O_RDONLY)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    # Opened before the fork: the child shares our mount namespace, and once it has
    # called pivot_root our own root is the container's too, where the host path of
    # the pid file (under a lab root in /tmp, say) may not exist.
    pid_fd = os.open(spec.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.close(pid_fd)
        _container_main(spec, write_fd)
    os.close(write_fd)
    try:
        os.write(pid_fd, f"{pid}\n".encode())
    finally:
        os.close(pid_fd)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(sig, forward)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if chunks:
        print(f"launcher: {b''.join(chunks).decode(errors='replace')}", file=sys.stderr)
        return START_ERROR_EXIT
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    parent = os.environ.pop(PARENT_ENV, "")
    linux.set_parent_death_signal(signal.SIGKILL)
    if parent and os.getppid() != int(parent):
        return START_ERROR_EXIT  # the kubelet died before we could watch it
    if len(argv) != 2:
        print("usage: python -m kubehoist.lab.kubelet.launcher SPEC.json", file=sys.stderr)
        return 2
    try:
        spec = LaunchSpec.from_json(Path(argv[1]).read_text())
        return run(spec)
    except (OSError, StartError, ValueError, KeyError) as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return START_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv))
