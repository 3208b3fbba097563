"""A real lab node: the upstream kubelet with containerd and runc, in namespaces of
its own (network, mount, UTS), with kubeadm's default paths inside it.

What a machine is made of, and what stands for it here:

| a real node                         | a lab node                                                |
| ----------------------------------- | --------------------------------------------------------- |
| the machine, its network interface  | a network namespace (netns.py), `eth0` on the lab LAN     |
| its disk: /etc/kubernetes, /var/lib | `<root>/nodes/<node>/…`, bound at those paths inside the  |
|   /kubelet, /var/lib/containerd, …  |   node's own mount namespace                              |
| /run (a tmpfs, empty at boot)       | a fresh tmpfs on /run in the node's mount namespace       |
| its hostname                        | a UTS namespace (the node's `hostname`, maybe an FQDN)    |
| systemd: containerd.service,        | the node's init (`python -m kubehoist.lab.node`): starts  |
|   kubelet.service (Restart=always)  |   containerd, then the kubelet as kubeadm's drop-in does  |
|                                     |   (kubeadm-flags.env), restarts them when they die        |
| systemctl                           | a shim that asks the init (systemctl.py)                  |
| the kubeadm/kubelet/cri-tools pkgs  | kubeadm, kubelet, crictl bound into /usr/local/sbin       |
| the machine's cgroup tree           | `/kubehoist-<lab>/<node>` in every cgroup v1 hierarchy:   |
|                                     |   `system/` for init, containerd and the kubelet, the     |
|                                     |   kubelet's pods below (its `--cgroup-root`; cgroups.py)  |
| power off                           | every process of that cgroup tree killed                  |
|                                     |   (cgroups.cleanup())                                     |

Everything else of the host (its /usr, /bin, /tmp, …) is seen as it is, so the
binaries and the Python that runs this module are found at their usual paths. The
node's own paths and the configuration files the host writes before it boots
(containerd's, the CNI's) are in nodeconfig.py; this module holds the names of the
node's run files, the command that boots it, and its init.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kubehoist.errors import KubehoistError
from kubehoist.lab import systemctl
from kubehoist.lab.cgroups import cgroup_rel, join_system_cgroup, kill_cgroup_tree
from kubehoist.lab.nodeconfig import CONTAINERD_SOCKET, NODE_DIRS
from kubehoist.lab.procs import die_with_parent
from kubehoist.lab.spec import LabNode, LabSpec

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

KUBELET_RESTART_S = 10.0  # kubeadm's kubelet.service: Restart=always, RestartSec=10
CONTAINERD_RESTART_S = 5.0  # containerd.service: Restart=always, RestartSec=5

_libc = ctypes.CDLL(None, use_errno=True)


# --- names shared with the supervisor and the CLI --------------------------------------
def pid_file(spec: LabSpec, node: LabNode) -> Path:
    """Holds the pid of the node's init process (its namespaces are that process's)."""
    return spec.run_dir / f"node-{node.name}.pid"


def images_file(spec: LabSpec) -> Path:
    """The image archives every node imports into its containerd before its kubelet
    starts (one path a line, written by the supervisor)."""
    return spec.run_dir / "node-images.txt"


def booted_file(spec: LabSpec, node: LabNode) -> Path:
    """Written by a node's init once containerd runs with the lab's images imported (the
    machine is up; kubeadm may run on it)."""
    return spec.run_dir / f"node-{node.name}.booted"


def pods_stopped_file(spec: LabSpec, node: LabNode) -> Path:
    """Written by a node's init once, shutting down, it stopped the kubelet and the pods."""
    return spec.run_dir / f"node-{node.name}.pods-stopped"


def init_pid(spec: LabSpec, node: LabNode) -> int:
    try:
        return int(pid_file(spec, node).read_text().strip())
    except (OSError, ValueError) as exc:
        raise KubehoistError(
            f"node {node.name} is not running (no {pid_file(spec, node)})"
        ) from exc


def enter_argv(spec: LabSpec, node: LabNode) -> list[str]:
    """The argv prefix that runs a command inside the node's mount, UTS and network
    namespaces (as if logged in on that machine)."""
    return ["nsenter", "-t", str(init_pid(spec, node)), "-m", "-u", "-n", "--"]


def log_dir(spec: LabSpec, node: LabNode) -> Path:
    """Where the node's init, containerd and kubelet write their logs (its journal)."""
    return node.root(spec.root) / "var" / "log"


# --- starting a node (host side) ------------------------------------------------------
def boot_argv(spec: LabSpec, node: LabNode) -> list[str]:
    """The command that boots a node: its init, in the node's network namespace and in
    a new mount and UTS namespace."""
    return [
        "nsenter",
        f"--net=/run/netns/{node.netns}",
        "--",
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "kubehoist.lab.node",
        str(spec.root),
        node.name,
    ]


# --- the node's init (runs inside the node) ---------------------------------------------
def _mount(source: str, target: str, fstype: str | None = None, flags: int = 0) -> None:
    MS_BIND = 4096
    ret = _libc.mount(
        source.encode(),
        target.encode(),
        (fstype or "").encode() if fstype else None,
        ctypes.c_ulong(flags | (0 if fstype else MS_BIND)),
        None,
    )
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY="value"` lines as systemd's EnvironmentFile= reads them (kubeadm-flags.env)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        parts = shlex.split(value)
        out[key.strip()] = " ".join(parts)
    return out


def kubelet_argv(kubelet: Path, etc_default: str, flags_env: str) -> list[str]:
    """The kubelet's command line as kubeadm's systemd drop-in (10-kubeadm.conf) makes it."""
    env = parse_env_file(flags_env)
    extra = parse_env_file(etc_default)
    argv = [
        str(kubelet),
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
    ]
    argv += shlex.split(env.get("KUBELET_KUBEADM_ARGS", ""))
    argv += shlex.split(extra.get("KUBELET_EXTRA_ARGS", ""))
    return argv


class _Service:
    """One supervised daemon of the node (what a systemd unit with Restart=always is)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], restart_s: float, log_path: Path
    ) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.restart_s = restart_s
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.next_start = 0.0
        self.wanted = True  # systemd's "started" (the unit is enabled and not stopped)

    @property
    def active_state(self) -> str:
        """systemd's ActiveState: `active` while running, `activating` while waiting to
        be restarted after it died (a crash loop), `inactive` once stopped."""
        if not self.wanted:
            return "inactive"
        return "active" if self.proc is not None and self.proc.poll() is None else "activating"

    def control(self, verb: str) -> None:
        """`systemctl start|stop|restart`: done when this returns, as systemctl waits."""
        if verb in ("stop", "restart"):
            self.stop(10)
            self.proc = None
        self.wanted = verb != "stop"
        if self.wanted and (self.proc is None or self.proc.poll() is not None):
            self.proc = None
            self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            logf.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def poll(self) -> None:
        """Restart the daemon `restart_s` after it died (unless it was stopped)."""
        if not self.wanted:
            return
        if self.proc is None:
            if time.monotonic() >= self.next_start:
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            return
        with open(self.log_path, "ab") as logf:
            logf.write(f"--- exited {code}; restart in {self.restart_s:g}s\n".encode())
        self.proc = None
        self.next_start = time.monotonic() + self.restart_s

    def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_socket(path: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KubehoistError(f"containerd exited {proc.returncode} before listening")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise KubehoistError(f"containerd not listening on {path} after {timeout:.0f}s")


def _import_images(ctr: str, env: dict[str, str], archives: list[str], log_path: Path) -> None:
    with open(log_path, "ab") as logf:
        for archive in archives:
            proc = subprocess.run(
                [ctr, "--address", CONTAINERD_SOCKET, "-n", "k8s.io", "images", "import",
                 "--label", "io.cri-containerd.pinned=pinned", archive],
                stdout=logf, stderr=subprocess.STDOUT, env=env, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise KubehoistError(f"ctr images import {archive} failed (see {log_path})")


def _installed_packages(nroot: Path) -> dict[str, str]:
    """`lab install`'s record on the node's disk (lab/install.py), program -> binary."""
    path = nroot / "var/lib/kubehoist-lab/packages.json"
    if not path.exists():
        return {}
    programs = json.loads(path.read_text()).get("programs", {})
    return {k: v for k, v in programs.items() if k in ("kubeadm", "kubelet") and Path(v).exists()}


def node_main(root: Path, name: str) -> int:
    """The node's init: mounts, hostname, cgroup, then containerd and the kubelet."""
    spec = LabSpec.load(root)
    node = spec.node(name)
    nroot = node.root(spec.root)
    cfg = json.loads((spec.run_dir / f"node-{node.name}.json").read_text())
    logs = log_dir(spec, node)
    logs.mkdir(parents=True, exist_ok=True)
    join_system_cgroup(spec, node)
    die_with_parent()
    # The machine's disk and /run.
    for d in NODE_DIRS:
        src = nroot / d.lstrip("/")
        src.mkdir(parents=True, exist_ok=True)
        Path(d).mkdir(parents=True, exist_ok=True)
        _mount(str(src), d)
    # The lab has no DNS server: the node's resolver asks its own loopback, where nothing
    # listens, so a name lookup (an image pull from a registry) fails at once.
    resolv = nroot / "etc/resolv.conf"
    resolv.write_text("# kubehoist lab: no DNS server on this network\nnameserver 127.0.0.1\n")
    _mount(str(resolv), "/etc/resolv.conf")
    _mount("tmpfs", "/run", "tmpfs")
    os.chmod("/run", 0o755)
    # kubeadm's packages install cri-tools: crictl on the node's PATH.
    sbin = Path("/usr/local/sbin")
    sbin.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", str(sbin), "tmpfs")
    # and kubeadm's packages: kubeadm, the kubelet (preflight runs `kubelet --version`)
    # and systemd's `systemctl`, here the lab's shim that asks this init (systemctl.py).
    programs = {"crictl": cfg["crictl"], "kubelet": cfg["kubelet"], "kubeadm": cfg.get("kubeadm")}
    # and the packages `lab install` put on this node since (another version's)
    programs.update(_installed_packages(nroot))
    for program, path in programs.items():
        if path:
            (sbin / program).touch(mode=0o755)
            _mount(path, str(sbin / program))
    control = Path(systemctl.CONTROL_DIR)
    for d in ("/run/containerd", "/run/netns", "/run/lock"):
        Path(d).mkdir(parents=True, exist_ok=True)
    systemctl.install(control, sbin / "systemctl")
    systemctl.write_state(control, "containerd", "active")
    socket.sethostname(node.os_hostname)
    pid_file(spec, node).write_text(f"{os.getpid()}\n")

    signals: list[int] = []

    def _on_term(sig: int, _frame: object) -> None:
        signals.append(sig)

    restarts: list[int] = []
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    signal.signal(signal.SIGHUP, lambda sig, _f: restarts.append(sig))  # systemctl restart kubelet
    pods_stopped_file(spec, node).unlink(missing_ok=True)
    booted_file(spec, node).unlink(missing_ok=True)

    env = {
        "PATH": f"{cfg['containerd_bin_dir']}:{SYSTEM_PATH}",
        "HOME": "/root",
    }
    containerd = _Service(
        "containerd",
        [cfg["containerd"], "--config", "/etc/containerd/config.toml"],
        env,
        CONTAINERD_RESTART_S,
        logs / "containerd.log",
    )
    containerd.start()
    assert containerd.proc is not None
    _wait_socket(CONTAINERD_SOCKET, containerd.proc, 60)
    archives = (
        [a for a in images_file(spec).read_text().split("\n") if a.strip()]
        if images_file(spec).exists()
        else []
    )
    _import_images(cfg["ctr"], env, archives, logs / "containerd.log")

    def _kubelet_argv() -> list[str]:
        flags = Path("/var/lib/kubelet/kubeadm-flags.env")
        default = nroot / "etc/default/kubelet"  # the node's KUBELET_EXTRA_ARGS
        return kubelet_argv(
            sbin / "kubelet",  # where kubeadm's packages put it (a restart runs the new one)
            default.read_text() if default.exists() else "",
            flags.read_text() if flags.exists() else "",
        )

    booted_file(spec, node).write_text(f"{time.time()}\n")
    # kubelet.service is enabled, as kubeadm's packages leave it: before `kubeadm init`
    # or `join` wrote its configuration it exits at once and is restarted every 10 s.
    kubelet = _Service("kubelet", _kubelet_argv(), env, KUBELET_RESTART_S, logs / "kubelet.log")
    kubelet.start()
    while not signals:
        if restarts:
            restarts.clear()
            kubelet.control("restart")
        for request in systemctl.pending(control):
            kubelet.argv = _kubelet_argv()  # as systemd re-reads EnvironmentFile= on start
            kubelet.control(request.verb)
            request.answer(0)
        containerd.poll()
        kubelet.argv = _kubelet_argv()
        kubelet.poll()
        systemctl.write_state(control, "kubelet", kubelet.active_state)
        time.sleep(0.2)
    # Shutting down, in a machine's order: the kubelet, then the pods (containerd sees
    # them exit and keeps their end), then — on a second signal, or at once on SIGINT
    # — containerd itself.
    kubelet.stop(10)
    with contextlib.suppress(KubehoistError):
        kill_cgroup_tree(cgroup_rel(spec, node) + "/kubepods", timeout=10)
    time.sleep(0.5)  # the shims report the exits to containerd
    pods_stopped_file(spec, node).write_text(f"{time.time()}\n")
    deadline = time.monotonic() + 60
    while len(signals) < 2 and signal.SIGINT not in signals and time.monotonic() < deadline:
        time.sleep(0.1)
    containerd.stop(10)
    return 0


if __name__ == "__main__":
    sys.exit(node_main(Path(sys.argv[1]), sys.argv[2]))
