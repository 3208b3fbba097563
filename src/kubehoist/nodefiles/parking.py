"""Parking static pod manifests: moved out of the kubelet's manifests directory into
`/etc/kubernetes/kubehoist/parked/`, byte for byte, with a record of where each came
from and its sha256, and put back the same way.

Two ways to reach a node's files:
- `LocalNodeFiles`: kubehoist runs on the node (`--manifests-dir`), plain file moves;
- `PodNodeFiles`: from a workstation, a short-lived helper pod pinned to the node with
  `spec.nodeName` (no scheduler, no controller manager needed) mounting the node's
  `/etc/kubernetes`, running a POSIX shell script (`nodefiles/scripts.py`); its result
  comes back in the container's termination message (no log access to the node needed).

Both do the same steps in the same order, so that an interruption at any point leaves
a state from which park and unpark both complete: the copy and its record are written
(and checked) before the original is removed; on the way back the parked copy is
removed only after the manifest is in place and checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubehoist.errors import KubehoistError

MANIFESTS_DIR = "/etc/kubernetes/manifests"
PARK_DIR = "/etc/kubernetes/kubehoist/parked"
RECORD_SUFFIX = ".kubehoist.json"


@dataclass(frozen=True, kw_only=True)
class ParkResult:
    node: str
    filename: str
    sha256: str
    state: str  # "parked" | "unparked" | "already-parked" | "already-in-place"
    cleared: str = ""  # what the runtime clean-up before an unpark did (see CLEARING)
    stopped: bool = False  # after a park: the node's runtime showed the pod stopped (STOPPED)


class NodeFiles(Protocol):
    """What pivot needs of a node's files."""

    def park(self, node: str, filename: str) -> ParkResult: ...

    def unpark(self, node: str, filename: str) -> ParkResult: ...

    def parked(self, node: str, filename: str) -> str | None:
        """The sha256 of the parked copy, or None when nothing is parked."""
        ...


def record_json(*, source: str, sha256: str, size: int, when: str) -> str:
    return json.dumps(
        {"from": source, "sha256": sha256, "size": size, "parkedAt": when, "by": "kubehoist"},
        sort_keys=True,
    )


# --- the kubelet's memory of a parked static pod ----------------------------------------
CLEARING = """\
A static pod's UID is a hash of its manifest, its node name and its file's path, so a
manifest put back byte for byte is the same pod to the kubelet. While the exited
containers of that UID still exist in the container runtime (the kubelet removes them
only at its container GC, a minute after it forgot the pod), the kubelet applies its
crash-loop back-off to the restored pod: 10 s, then 20, 40 … 300 s for every cycle
within ten minutes. So before a manifest goes back, the pod's stopped sandboxes (and
with them its exited containers) are removed through the node's own `crictl` — what
the kubelet's GC would do a minute later. A node without crictl (kubeadm installs it
with cri-tools) is left as it is: the restore still works, maybe after a back-off.
"""

CRICTL_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/bin", "/opt/bin")


def static_pod_name(filename: str, node: str) -> str:
    """The kubelet's name of the static pod of manifest `filename` on `node`
    (`<metadata.name>-<node>`; kubeadm names a manifest after its pod)."""
    stem = filename.rsplit(".", 1)[0]
    return f"{stem}-{node.lower()}"


def clear_argv(crictl: str, pod: str) -> list[str]:
    """crictl's listing of the pod's stopped sandboxes (ids, one a line)."""
    return [
        crictl, "pods", "--namespace", "^kube-system$", "--name", f"^{re.escape(pod)}$",
        "--state", "notready", "-q",
    ]  # fmt: skip


KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
"""kubeadm's KubeletConfiguration; its `containerRuntimeEndpoint` is the kubelet's own
runtime, which crictl is pointed at (without it crictl tries several sockets in turn,
~0.1 s a call, and on a node with two runtimes may ask the wrong one)."""

_ENDPOINT = re.compile(r"""^containerRuntimeEndpoint:\s*["']?([^"'\s#]+)""", re.MULTILINE)


def runtime_endpoint(root: Path) -> str | None:
    """The kubelet's `containerRuntimeEndpoint` in the node's KubeletConfiguration."""
    try:
        text = (root / KUBELET_CONFIG.lstrip("/")).read_text(errors="replace")
    except OSError:
        return None
    m = _ENDPOINT.search(text)
    return m.group(1) if m else None


def _node_crictl(host_root: Path | None) -> list[str] | None:
    """The argv that runs the node's crictl, pointed at the kubelet's runtime: on PATH,
    or under `host_root` (chrooted there); None when the node has none."""
    argv: list[str] | None = None
    if host_root is None:
        found = shutil.which("crictl")
        argv = [found] if found else None
    else:
        for d in CRICTL_DIRS:
            if os.access(host_root / d.lstrip("/") / "crictl", os.X_OK):
                argv = ["chroot", str(host_root), f"{d}/crictl"]
                break
    if argv is None:
        return None
    endpoint = runtime_endpoint(host_root or Path("/"))
    return [*argv, "-r", endpoint] if endpoint else argv


def clear_stopped_sandboxes(pod: str, *, host_root: Path | None = None) -> str:
    """Remove the stopped sandboxes of static pod `pod` with the node's crictl (found
    on PATH, or under `host_root`, run chrooted there). Returns `cleared-N`,
    `no-crictl` or `crictl-failed`; never raises: the restore goes on regardless."""
    argv = _node_crictl(host_root)
    if argv is None:
        return "no-crictl"
    try:
        out = subprocess.run(
            [*argv, *clear_argv("", pod)[1:]],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        n = 0
        for sandbox in out.stdout.split():
            rm = subprocess.run(
                [*argv, "rmp", sandbox], capture_output=True, timeout=20, check=False
            )
            n += rm.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return "crictl-failed"
    return f"cleared-{n}"


# --- a parked static pod, stopped -------------------------------------------------------
STOPPED = """\
After a park, the API server learns late that the static pod stopped: the real kubelet
(v1.36) posts no terminated status for a pod whose manifest went away, and deletes its
mirror pod only at a housekeeping pass (every 2 s) after the pod has terminated — 2 to
4 s after its process exited (tests/e2e/test_certainly_dead.py). On the node itself the
container runtime knows at once. The kubelet stops a pod by stopping its containers,
then its sandbox; so when the node's crictl lists sandboxes of the pod and none of them
is ready, every container of the pod has stopped: the pod is certainly dead. No crictl,
a failing crictl or no sandbox at all tells nothing (the API rules apply then).
"""


def sandbox_argv(crictl: str, pod: str, *, ready: bool) -> list[str]:
    """crictl's listing of the ids of static pod `pod`'s sandboxes (`ready`: only those
    still running)."""
    return [
        crictl, "pods", "--namespace", "^kube-system$", "--name", f"^{re.escape(pod)}$",
        *(("--state", "ready") if ready else ()), "-q",
    ]  # fmt: skip


def runtime_stopped(pod: str, *, host_root: Path | None = None) -> bool | None:
    """True: the node's runtime has sandboxes of `pod` and none is ready; False: one is
    ready; None: it cannot tell (see STOPPED)."""
    argv = _node_crictl(host_root)
    if argv is None:
        return None

    def ids(ready: bool) -> list[str]:
        cmd = [*argv, *sandbox_argv("", pod, ready=ready)[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.split()

    try:
        every, ready = ids(False), ids(True)
    except (OSError, subprocess.SubprocessError):
        return None
    if not every:
        return None
    return not ready


def wait_runtime_stopped(
    pod: str, *, host_root: Path | None = None, timeout: float = 20.0, every: float = 0.05
) -> bool:
    """Whether the node's runtime showed `pod` stopped within `timeout` (False at once
    when it cannot tell)."""
    deadline = time.monotonic() + timeout
    while True:
        got = runtime_stopped(pod, host_root=host_root)
        if got is None:
            return False
        if got:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


# --- on the node itself ---------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes, *, like: Path | None = None) -> None:
    tmp = path.parent / f".{path.name}.kubehoist-tmp"
    tmp.write_bytes(data)
    if like is not None:
        st = like.stat()
        os.chmod(tmp, st.st_mode & 0o7777)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


@dataclass(frozen=True)
class LocalNodeFiles:
    """`host_root`: where the node's `/` is mounted when this runs in a container (the
    guard), to run the node's crictl before an unpark; None: this machine is the node."""

    """Files of the node kubehoist runs on: `manifests_dir` is its kubelet's
    staticPodPath; parked copies go to `<manifests_dir>/../kubehoist/parked`."""

    manifests_dir: Path
    host_root: Path | None = None
    stop_wait_s: float = 0.0  # after a park: how long to watch the runtime (see STOPPED)

    @property
    def park_dir(self) -> Path:
        return self.manifests_dir.parent / "kubehoist" / "parked"

    def park(self, node: str, filename: str) -> ParkResult:
        src = self.manifests_dir / filename
        dst = self.park_dir / filename
        record = self.park_dir / (filename + RECORD_SUFFIX)
        if not src.exists():
            if dst.exists():
                return ParkResult(
                    node=node, filename=filename, sha256=_sha256(dst), state="already-parked"
                )
            raise KubehoistError(f"{src}: no such manifest to park, and none parked at {dst}")
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.park_dir.mkdir(parents=True, exist_ok=True)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_atomic(
            record,
            record_json(source=str(src), sha256=digest, size=len(data), when=when).encode(),
        )
        _write_atomic(dst, data, like=src)
        if _sha256(dst) != digest:
            raise KubehoistError(f"{dst}: parked copy differs from {src}; nothing removed")
        src.unlink()
        stopped = self.stop_wait_s > 0 and wait_runtime_stopped(
            static_pod_name(filename, node), host_root=self.host_root, timeout=self.stop_wait_s
        )
        return ParkResult(
            node=node, filename=filename, sha256=digest, state="parked", stopped=stopped
        )

    def unpark(self, node: str, filename: str) -> ParkResult:
        src = self.park_dir / filename
        dst = self.manifests_dir / filename
        record = self.park_dir / (filename + RECORD_SUFFIX)
        if not src.exists():
            if dst.exists():
                return ParkResult(
                    node=node, filename=filename, sha256=_sha256(dst), state="already-in-place"
                )
            raise KubehoistError(f"{src}: nothing parked to put back, and no {dst}")
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if record.exists():
            want = json.loads(record.read_text()).get("sha256")
            if want != digest:
                raise KubehoistError(f"{src}: sha256 {digest} differs from its record {want}")
        cleared = clear_stopped_sandboxes(static_pod_name(filename, node), host_root=self.host_root)
        _write_atomic(dst, data, like=src)
        src.unlink()
        record.unlink(missing_ok=True)
        return ParkResult(
            node=node, filename=filename, sha256=digest, state="unparked", cleared=cleared
        )

    def parked(self, node: str, filename: str) -> str | None:
        path = self.park_dir / filename
        return _sha256(path) if path.exists() else None
