"""Faults of a lab's control plane, made as an operator makes them on a kubeadm node,
for tests and benchmarks: stop one API server and start it again, restart one etcd
member.

* `apiserver_stop` moves kube-apiserver's static manifest out of the kubelet's
  staticPodPath (`/etc/kubernetes/manifests` -> `/etc/kubernetes/lab-faults/`); the
  kubelet stops the pod. `apiserver_start` moves it back; the kubelet starts it again
  (the same pod UID, so the kubelet's crash back-off may hold it for a while).
* `etcd_restart` stops the running etcd container through the node's CRI (`crictl
  stop`, as `crictl` on the node does it); the kubelet restarts it (restartPolicy
  Always).

Each returns only once the effect is real, as seen from the LAN (where the load
balancer reaches the API servers) or from inside the node: the API server refuses
connections / answers `/readyz` with 200 (its certificate verified against the
cluster CA); the etcd member runs in a new container and its `/readyz` (the metrics
listener kubeadm configures, 127.0.0.1:2381) answers 200. Errors are KubehoistError.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from kubehoist.errors import KubehoistError
from kubehoist.lab import netns as nsutil
from kubehoist.lab.logkeeper import node_crictl
from kubehoist.lab.spec import API_PORT, LabNode, LabSpec

PARKED_DIR = "etc/kubernetes/lab-faults"
"""Where a stopped API server's manifest waits (outside the kubelet's staticPodPath)."""
NODE_CRICTL = Path("/usr/local/sbin/crictl")  # inside the node (node.node_main)
ETCD_PROBE_PORT = 2381  # kubeadm's --listen-metrics-urls=http://127.0.0.1:2381
STOP_TIMEOUT_S = 120.0
START_TIMEOUT_S = 360.0  # the kubelet's back-off for a restarted static pod reaches 5 min


def _control_plane(spec: LabSpec, node: LabNode) -> LabNode:
    try:
        known = spec.node(node.name)
    except KeyError:
        raise KubehoistError(f"lab {spec.root}: no node {node.name}") from None
    if not known.control_plane:
        raise KubehoistError(f"node {node.name} is not a control plane of lab {spec.root}")
    return known


def _http_status(
    netns: str, host: str, port: int, path: str, tls: ssl.SSLContext | None, timeout: float = 3
) -> int | None:
    """The status of `GET path` at host:port from inside `netns`; None: no answer."""
    try:
        raw = nsutil.socket_in(netns)
        raw.settimeout(timeout)
        with raw:
            raw.connect((host, port))
            sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
            with sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
                line = sock.recv(64).split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) >= 2 else None
    except (OSError, ValueError):
        return None


def _refuses(netns: str, host: str, port: int) -> bool:
    try:
        raw = nsutil.socket_in(netns)
        raw.settimeout(3)
        with raw:
            raw.connect((host, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise KubehoistError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


def apiserver_ready(spec: LabSpec, node: LabNode) -> bool:
    try:
        ctx = ssl.create_default_context(cafile=str(spec.pki_dir / "ca.crt"))
    except OSError as exc:
        raise KubehoistError(f"{spec.pki_dir / 'ca.crt'}: {exc.strerror}") from exc
    return _http_status(spec.lan_netns, node.ip, API_PORT, "/readyz", ctx) == 200


def _manifest_paths(spec: LabSpec, node: LabNode) -> tuple[Path, Path]:
    live = node.manifests_dir(spec.root) / "kube-apiserver.yaml"
    return live, node.root(spec.root) / PARKED_DIR / "kube-apiserver.yaml"


def apiserver_stop(spec: LabSpec, node: LabNode) -> None:
    """Stop the node's kube-apiserver (its manifest parked); return once it refuses."""
    node = _control_plane(spec, node)
    live, parked = _manifest_paths(spec, node)
    if live.exists():
        parked.parent.mkdir(parents=True, exist_ok=True)
        live.replace(parked)
    elif not parked.exists():
        raise KubehoistError(f"{live}: no kube-apiserver manifest on {node.name}")
    _wait(
        f"kube-apiserver on {node.name} to refuse connections",
        lambda: _refuses(spec.lan_netns, node.ip, API_PORT),
        STOP_TIMEOUT_S,
    )


def apiserver_start(spec: LabSpec, node: LabNode) -> None:
    """Start the node's kube-apiserver again (its manifest back); return once it answers
    /readyz with 200."""
    node = _control_plane(spec, node)
    live, parked = _manifest_paths(spec, node)
    if parked.exists():
        parked.replace(live)
    elif not live.exists():
        raise KubehoistError(f"{live}: no kube-apiserver manifest on {node.name}")
    _wait(
        f"kube-apiserver on {node.name} to be ready",
        lambda: apiserver_ready(spec, node),
        START_TIMEOUT_S,
    )


def _crictl(spec: LabSpec, node: LabNode, *args: str) -> str:
    """`crictl ARGS` on the node (its own crictl, on the node's PATH)."""
    return node_crictl(spec, node, NODE_CRICTL, timeout=60)(list(args))


def _running_etcd(spec: LabSpec, node: LabNode) -> str | None:
    out = _crictl(spec, node, "ps", "--name", "^etcd$", "--state", "running", "-o", "json")
    found = json.loads(out).get("containers") or []
    return str(found[0]["id"]) if found else None


def etcd_restart(spec: LabSpec, node: LabNode) -> None:
    """Stop the node's etcd container; return once the kubelet runs a new one and the
    member answers /readyz with 200."""
    node = _control_plane(spec, node)
    old = _running_etcd(spec, node)
    if old is None:
        raise KubehoistError(f"no running etcd container on {node.name}")
    _crictl(spec, node, "stop", "--timeout", "10", old)

    def back() -> bool:
        new = _running_etcd(spec, node)
        return (
            new is not None
            and new != old
            and _http_status(node.netns, "127.0.0.1", ETCD_PROBE_PORT, "/readyz", None) == 200
        )

    _wait(f"etcd on {node.name} to run again and be ready", back, START_TIMEOUT_S)
