"""`lab down` leaves nothing behind; a stopped lab comes back with its state."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease

from kubehoist.errors import KubehoistError
from kubehoist.lab import faults, netns
from kubehoist.lab.spec import LabSpec
from tests.e2e.conftest import host_port, kubehoist, lab_root, start_lab

pytestmark = pytest.mark.lab


def _processes_under(root: Path) -> list[str]:
    """Processes naming the lab root, or living in a node's mount namespace (which binds
    the node's directories: containerd, the kubelet, the shims and the containers)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        if str(root) in cmdline or str(root) in mounts:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def _mounts_under(root: Path) -> list[str]:
    """Mounts of the lab root in any mount namespace."""
    found = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            found += [line for line in info.read_text().splitlines() if str(root) in line]
        except OSError:
            continue
    return found


def _readyz_from(netns_name: str, url: str) -> str:
    code = (
        "import ssl,urllib.request;c=ssl.create_default_context();"
        "c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;"
        f"print(urllib.request.urlopen({url!r},context=c,timeout=5).read().decode())"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns_name, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.stdout.strip()


def _etcd_members(spec: LabSpec) -> list[str]:
    """The members etcd lists (its v3 JSON gateway), asked from inside cp-1 with the
    healthcheck client certificate kubeadm made there."""
    node = spec.control_planes[0]
    pki = node.root(spec.root) / "etc/kubernetes/pki/etcd"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "healthcheck-client.crt", pki / "healthcheck-client.key")
    raw = netns.socket_in(node.netns)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", 2379))
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(
            b"POST /v3/cluster/member/list HTTP/1.0\r\nHost: 127.0.0.1:2379\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    body = reply.split(b"\r\n\r\n", 1)[1]
    return [m.get("name", "") for m in json.loads(body)["members"]]


def test_three_control_planes_down_leaves_nothing_and_up_restarts() -> None:
    root = lab_root().parent / "lifecycle"
    # a port of its own, beside the session lab's (KUBEHOIST_TEST_HOST_PORT)
    handle = start_lab(root, host_port() + 13, workers=1, control_planes=3)
    spec = handle.spec
    try:
        # As on an HA kubeadm cluster: every control plane has kubeadm's static pods
        # (its own etcd member and API server), which answers at its own address.
        assert len(spec.control_planes) == 3
        for node in spec.control_planes:
            names = sorted(p.name for p in node.manifests_dir(spec.root).iterdir())
            assert names == [
                "etcd.yaml",
                "kube-apiserver.yaml",
                "kube-controller-manager.yaml",
                "kube-scheduler.yaml",
            ]
            assert _readyz_from(node.netns, f"https://{node.ip}:6443/readyz") == "ok"
        worker = spec.workers[0]
        endpoint = f"https://{spec.control_plane_endpoint}/readyz"
        assert _readyz_from(worker.netns, endpoint) == "ok"
        nodes = handle.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert sorted(nodes) == sorted(f"node/{n.name}" for n in spec.nodes)
        members = _etcd_members(spec)
        assert sorted(members) == sorted(n.name for n in spec.control_planes), members

        # The faults: an API server stopped, the endpoint serves through the others;
        # started again; an etcd member restarted, the cluster keeps its data.
        cp1, cp3 = spec.control_planes[0], spec.control_planes[2]
        faults.apiserver_stop(spec, cp1)
        assert _readyz_from(cp1.netns, f"https://{cp1.ip}:6443/readyz") == ""
        for _ in range(6):  # the load balancer skips it
            handle.kubectl("get", "--raw", "/readyz")
            assert _readyz_from(worker.netns, endpoint) == "ok"
        faults.apiserver_start(spec, cp1)
        assert _readyz_from(cp1.netns, f"https://{cp1.ip}:6443/readyz") == "ok"
        faults.etcd_restart(spec, cp3)
        handle.kubectl("create", "configmap", f"after-etcd-{os.getpid()}", "-n", "default")
        with pytest.raises(KubehoistError, match="not a control plane"):
            faults.apiserver_stop(spec, worker)

        assert netns.lab_namespaces(spec), "the lab made no network namespaces"
        assert _processes_under(spec.root), "the lab runs no process"
        marker = f"kept-{os.getpid()}"
        handle.kubectl("create", "configmap", marker, "-n", "default")

        kubehoist("lab", "down", "--root", str(spec.root))
        stopped = datetime.now(UTC)
        assert _processes_under(spec.root) == []
        assert netns.lab_namespaces(spec) == []
        assert _mounts_under(spec.root) == []
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f"kh{spec.lab_id}" not in links
        cgroups = sorted(Path("/sys/fs/cgroup").glob(f"*/kubehoist-{spec.lab_id}"))
        assert cgroups == []

        # A stopped lab starts again with its etcd data and PKI, and every kubelet is back.
        kubehoist("lab", "up", "--root", str(spec.root))
        handle.kubectl("get", "configmap", marker, "-n", "default")
        deadline = time.monotonic() + 240
        for node in spec.nodes:
            while True:
                try:  # a kubelet makes its Lease again if it is gone
                    lease = handle.client.get(Lease, node.name, namespace="kube-node-lease").spec
                except ApiError:
                    lease = None
                if lease is not None and lease.renewTime is not None and lease.renewTime > stopped:
                    break
                assert time.monotonic() < deadline, f"{node.name}'s kubelet is not back"
                time.sleep(1)
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(spec.root), check=False)
    assert not spec.root.exists()
