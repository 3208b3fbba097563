"""A lab node's cgroups: `/kubehoist-<lab>/<node>` in every cgroup v1 hierarchy, with
`system/` for the node's init, containerd and the kubelet, and the kubelet's pods below
(its `--cgroup-root`). A node is powered off by killing every process of its tree and
removing the cgroups (`kill_cgroup_tree`; `cleanup` for every node of a lab).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from kubehoist.errors import KubehoistError
from kubehoist.lab.spec import LabNode, LabSpec

CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup_rel(spec: LabSpec, node: LabNode) -> str:
    """The node's cgroup, relative to each hierarchy's root (the kubelet's cgroupRoot)."""
    return f"/kubehoist-{spec.lab_id}/{node.name}"


def _hierarchies(*, with_v2: bool = False) -> list[Path]:
    """Every mounted cgroup v1 hierarchy (cpu, memory, …, name=systemd); `with_v2`: and
    the cgroup2 mount beside them (no controllers here, but runc and the kubelet make
    their cgroups there too, so a clean-up must remove them there as well)."""
    out = []
    if CGROUP_FS.is_dir():
        for p in sorted(CGROUP_FS.iterdir()):
            if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists():
                if (p / "cgroup.controllers").exists() and not with_v2:
                    continue
                out.append(p)
    return out


def _mkdir_cgroup(hier: Path, rel: str) -> Path:
    path = hier
    for part in rel.strip("/").split("/"):
        parent, path = path, path / part
        if not path.exists():
            path.mkdir()
        if hier.name == "cpuset":  # a new cpuset is empty: it must inherit cpus and mems
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (path / f).read_text().strip():
                    (path / f).write_text((parent / f).read_text())
    return path


def make_cgroups(spec: LabSpec, node: LabNode) -> None:
    for hier in _hierarchies():
        _mkdir_cgroup(hier, cgroup_rel(spec, node) + "/system")


def join_system_cgroup(spec: LabSpec, node: LabNode) -> None:
    for hier in _hierarchies():
        path = _mkdir_cgroup(hier, cgroup_rel(spec, node) + "/system")
        (path / "cgroup.procs").write_text(f"{os.getpid()}\n")


def _tree(path: Path) -> list[Path]:
    """A cgroup and its descendants, deepest first."""
    if not path.is_dir():
        return []
    out: list[Path] = []
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        out.append(Path(dirpath))
    return out


def _pids(path: Path) -> set[int]:
    pids: set[int] = set()
    for cg in _tree(path):
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in (cg / "cgroup.procs").read_text().split()}
    return pids


def kill_cgroup_tree(rel: str, timeout: float = 10.0) -> int:
    """Kill every process in the cgroup `rel` and below (frozen first, so nothing forks
    away), then remove the cgroups. Returns how many processes were killed."""
    freezer = CGROUP_FS / "freezer" / rel.strip("/")
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for hier in _hierarchies(with_v2=True):
            pids |= _pids(hier / rel.strip("/"))
        pids.discard(os.getpid())
        if not pids:
            break
        if freezer.is_dir():
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        if freezer.is_dir():
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")
        if time.monotonic() > deadline:
            raise KubehoistError(
                f"cgroup {rel}: processes left after {timeout:.0f}s: {sorted(pids)}"
            )
        time.sleep(0.05)
    # A cgroup whose last task just exited may refuse rmdir (EBUSY) for a few seconds.
    left: list[Path] = []
    until = time.monotonic() + 15
    while True:
        left = []
        for hier in _hierarchies(with_v2=True):
            for cg in _tree(hier / rel.strip("/")):
                try:
                    cg.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(cg)
        if not left or time.monotonic() > until:
            break
        time.sleep(0.2)
    if left:
        raise KubehoistError(f"cgroup {rel}: could not remove {', '.join(map(str, left[:3]))}")
    return len(killed)


def cleanup(spec: LabSpec) -> int:
    """Power every node of the lab off: kill everything in the lab's cgroup trees."""
    return kill_cgroup_tree(f"/kubehoist-{spec.lab_id}")
