"""The lab's nodes end to end: the upstream kubelet v1.36 with containerd 2.3 and runc
in each node's own network, mount and UTS namespaces.

What matters to kubehoist is checked, and the static pod behaviour it builds on is
measured (run with `pytest -s` to see the figures): how a removed static manifest
stops its pod, and how long the byte-identical file, put back, takes to run again —
the kubelet's crash back-off applies to it when the parked pod's exited container is
still there.

In file order: the session lab (one control plane, two workers), then a lab of its
own with three control planes and a worker for the FQDN hostname of cp-2, a machine
crash and `lab down`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod

from kubehoist.lab import netns, podproc
from kubehoist.lab import node as labnode
from kubehoist.lab.binaries import locate
from kubehoist.lab.images import BUSYBOX_IMAGE
from kubehoist.lab.logkeeper import node_crictl
from kubehoist.lab.spec import FQDN_DOMAIN, LabNode, LabSpec
from tests.e2e.conftest import LabHandle, host_port, kubehoist, lab_root, start_lab
from tests.e2e.kwatch import KubectlWatch
from tests.e2e.test_status import IMAGE as ARTICLE_IMAGE
from tests.e2e.test_status import article_deployment, build_article_image

pytestmark = pytest.mark.lab

NS = "default"
KCM = "kube-controller-manager"
SCHED = "kube-scheduler"
SERVICE_IP = netns.KUBERNETES_SERVICE_IP  # the `kubernetes` Service, 10.96.0.1
SYSTEM_NODE_CRITICAL = 2000001000
RESTART_SLACK_S = 20.0  # kubelet latency: a held-back pod is synced again every 10-15 s
HELD_BACK_S = 6.0  # a restore slower than this was held back (immediate ones take 1-4 s)
BACKOFF_CAP_S = 300.0  # the kubelet's crash back-off: 10 s doubling to 5 min
UID_LABEL = "io.kubernetes.pod.uid"


# --- helpers -----------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def apply(lab: LabHandle, obj: dict[str, Any]) -> None:
    lab.kubectl("apply", "-f", "-", input=json.dumps(obj))


def get_pod(lab: LabHandle, name: str, namespace: str = NS) -> Pod | None:
    try:
        return lab.client.get(Pod, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def container_status(pod: Pod | None, name: str | None = None) -> Any:
    statuses = (pod.status.containerStatuses if pod and pod.status else None) or []
    for cs in statuses:
        if name is None or cs.name == name:
            return cs
    return None


def is_ready(pod: Pod | None) -> bool:
    conditions = (pod.status.conditions if pod and pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def running_id(pod: Pod | None, name: str | None = None) -> str | None:
    cs = container_status(pod, name)
    if cs is None or cs.state is None or cs.state.running is None or not cs.containerID:
        return None
    return str(cs.containerID)


def pod_obj(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container], **spec},
    }


def delete(lab: LabHandle, kind: str, name: str, namespace: str = NS) -> None:
    lab.kubectl("delete", kind, name, "-n", namespace, "--ignore-not-found", "--wait=false")


def lease(lab: LabHandle, name: str, namespace: str = "kube-system") -> Any:
    try:
        return lab.client.get(Lease, name, namespace=namespace).spec
    except ApiError:
        return None


def holder(lab: LabHandle, name: str) -> str:
    spec = lease(lab, name)
    return str(spec.holderIdentity or "") if spec is not None else ""


def renewed_within(
    lab: LabHandle, name: str, seconds: float, namespace: str = "kube-system"
) -> bool:
    spec = lease(lab, name, namespace)
    if spec is None or spec.renewTime is None:
        return False
    age: float = (datetime.now(UTC) - spec.renewTime).total_seconds()
    return age < seconds


def crictl(spec: LabSpec, node: LabNode) -> Callable[[list[str]], str]:
    """`crictl ARGS` inside the node, against its containerd; its stdout."""
    run = node_crictl(spec, node, locate().path("crictl"), timeout=60)
    return lambda args: run(args)


def containers(spec: LabSpec, node: LabNode, name: str) -> dict[str, tuple[str, str]]:
    """The node's containers named `name`, running or not: id -> (state, pod UID)."""
    doc = json.loads(crictl(spec, node)(["ps", "-a", "-o", "json", "--name", f"^{name}$"]))
    return {
        c["id"]: (c["state"], c.get("labels", {}).get(UID_LABEL, ""))
        for c in doc.get("containers") or []
    }


def pod_exec(spec: LabSpec, pod: Pod, *command: str) -> str:
    """Run a command in the pod's (first) container through CRI, not the API server."""
    assert pod.spec is not None and pod.spec.nodeName
    cid = (running_id(pod) or "").split("://", 1)[-1]
    assert cid, f"{pod.metadata.name if pod.metadata else '?'}: no running container"
    return crictl(spec, spec.node(pod.spec.nodeName))(["exec", cid, *command])


def http_get(spec: LabSpec, pod: Pod, host: str, port: int, path: str = "/") -> str:
    """A plain HTTP/1.0 GET from inside `pod` with busybox `nc` (busybox's `wget -T`
    crashes in Debian's static build, `nc -w` does not)."""
    request = f"GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    return pod_exec(spec, pod, "sh", "-c", f"printf '{request}' | nc -w 10 {host} {port}")


def in_pod_network(spec: LabSpec, pod: Pod) -> bool:
    assert pod.spec is not None and pod.status is not None and pod.spec.nodeName
    cidr = ipaddress.ip_network(spec.node(pod.spec.nodeName).pod_cidr)
    return ipaddress.ip_address(pod.status.podIP or "0.0.0.0") in cidr


@pytest.fixture(scope="module")
def default_service_account(lab: LabHandle) -> None:
    """The ServiceAccount admission refuses pods until the controller manager made it."""
    wait_for(
        "the default ServiceAccount",
        lambda: lab.kubectl("get", "sa", "default", "-n", NS, check=False).returncode == 0,
        timeout=180,
    )


# --- nodes, static pods -------------------------------------------------------------------


def test_nodes_registered_and_kept_ready_by_their_kubelets(lab: LabHandle) -> None:
    spec = lab.spec
    nodes = {str(n.metadata.name): n for n in lab.client.list(Node) if n.metadata}
    assert set(nodes) == {n.name for n in spec.nodes}
    renewals: dict[str, datetime] = {}
    for name, node in nodes.items():
        assert node.status is not None and node.status.nodeInfo is not None
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready and ready[0].status == "True", (name, ready)
        assert ready[0].reason == "KubeletReady", ready[0]
        info = node.status.nodeInfo
        assert info.containerRuntimeVersion.startswith("containerd://"), info
        assert info.kubeletVersion == spec.kubernetes_version, info
        # The kubelet's heartbeat: its node Lease, held under the node's name.

        def node_lease_of(name: str = name) -> Any:
            return lab.client.get(Lease, name, namespace="kube-node-lease").spec

        node_lease = wait_for(f"{name}'s node Lease", node_lease_of, timeout=60)
        assert node_lease.holderIdentity == name and node_lease.renewTime is not None
        renewals[name] = node_lease.renewTime

    def all_renewed() -> bool:
        for name, before in renewals.items():
            now = lab.client.get(Lease, name, namespace="kube-node-lease").spec
            if now is None or now.renewTime is None or now.renewTime <= before:
                return False
        return True

    # nodeLeaseDurationSeconds 40 -> renewed every 10 s
    wait_for("every node Lease renewed by its kubelet", all_renewed, timeout=45, every=1)


def test_static_pods_have_mirror_pods_and_hold_their_leases(lab: LabHandle) -> None:
    cp = lab.spec.api_node
    for component in (KCM, SCHED):
        name = f"{component}-{cp.name}"

        def mirror_ready(name: str = name) -> Pod | None:
            pod = get_pod(lab, name, "kube-system")
            return pod if is_ready(pod) else None

        pod = wait_for(f"{name} Ready", mirror_ready, timeout=180)
        assert pod.metadata is not None and pod.status is not None
        notes = pod.metadata.annotations or {}
        assert notes.get("kubernetes.io/config.source") == "file", notes
        static_uid = notes.get("kubernetes.io/config.mirror", "")
        assert re.fullmatch(r"[0-9a-f]{32}", static_uid), notes
        assert notes.get("kubernetes.io/config.hash") == static_uid
        owners = [(o.kind, o.name, o.controller) for o in pod.metadata.ownerReferences or []]
        assert owners == [("Node", cp.name, True)]
        assert pod.status.podIP == cp.ip  # hostNetwork: the node's address
        cid = (running_id(pod, component) or "").removeprefix("containerd://")
        assert cid, pod.status.containerStatuses
        # The mirror pod stands for a container of the node's containerd, whose pod
        # UID is the static pod's (not the mirror pod's API UID).
        assert containers(lab.spec, cp, component).get(cid) == ("CONTAINER_RUNNING", static_uid)
        assert pod.metadata.uid != static_uid

        def leads(component: str = component) -> bool:
            return holder(lab, component).startswith(f"{cp.os_hostname}_") and renewed_within(
                lab, component, 15
            )

        wait_for(f"{component}'s Lease held by {cp.os_hostname} and renewed", leads, 120)


# --- pods ----------------------------------------------------------------------------------

WEB = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": NS},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                # one per worker, so that the traffic below crosses nodes
                "affinity": {
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "labelSelector": {"matchLabels": {"app": "web"}},
                                "topologyKey": "kubernetes.io/hostname",
                            }
                        ]
                    }
                },
                "containers": [
                    {
                        "name": "web",
                        "image": BUSYBOX_IMAGE,
                        "command": [
                            "sh",
                            "-c",
                            'mkdir -p /www && echo "hello from $POD_NAME" > /www/index.html'
                            " && exec httpd -f -p 8080 -h /www",
                        ],
                        "env": [
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            }
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/", "port": 8080},
                            "periodSeconds": 2,
                        },
                    }
                ],
            },
        },
    },
}


def test_deployment_is_ready_and_pod_ips_route_between_nodes(
    lab: LabHandle, default_service_account: None
) -> None:
    apply(lab, WEB)
    try:

        def two_ready() -> list[Pod] | None:
            pods = [
                p
                for p in lab.client.list(Pod, namespace=NS, labels={"app": "web"})
                if p.metadata is not None and p.metadata.deletionTimestamp is None
            ]
            return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

        pods = wait_for("2 web pods Ready", two_ready, timeout=180)
        by_node = {p.spec.nodeName: p for p in pods if p.spec is not None}
        assert set(by_node) == {n.name for n in lab.spec.workers}  # the real scheduler
        for pod in pods:
            assert in_pod_network(lab.spec, pod), pod.status
        for here, there in ((0, 1), (1, 0)):
            src, dst = pods[here], pods[there]
            assert dst.status is not None and dst.metadata is not None
            reply = http_get(lab.spec, src, str(dst.status.podIP), 8080)
            assert reply.startswith("HTTP/1.") and " 200 " in reply.splitlines()[0], reply
            assert f"hello from {dst.metadata.name}" in reply
        # No kube-proxy: the lab DNATs the `kubernetes` Service to the API endpoint.
        reply = http_get(lab.spec, pods[0], SERVICE_IP, 443, "/version")
        assert "Client sent an HTTP request to an HTTPS server" in reply, reply
    finally:
        delete(lab, "deployment", "web")


def test_kubectl_logs_and_exec_reach_the_kubelet(
    lab: LabHandle, default_service_account: None
) -> None:
    """The API server's kubelet client (kubeadm's apiserver-kubelet-client certificate)
    may use the kubelet API: `kubectl logs` and `kubectl exec` work."""
    name = "talker"
    script = 'echo "said by $(hostname)"; exec sleep 3600'
    apply(
        lab, pod_obj(name, {"name": "c", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script]})
    )
    try:
        wait_for("talker running", lambda: running_id(get_pod(lab, name)), timeout=120)

        def logs() -> Any:
            out = lab.kubectl("logs", name, "-n", NS, check=False)
            return out if out.returncode == 0 and out.stdout.strip() else None

        try:
            out = wait_for("kubectl logs", logs, timeout=30, every=1)
        except AssertionError:
            raise AssertionError(lab.kubectl("logs", name, "-n", NS, check=False).stderr) from None
        assert out.stdout.strip() == f"said by {name}"
        out = lab.kubectl("exec", name, "-n", NS, "--", "hostname", check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == name
    finally:
        delete(lab, "pod", name)


def test_an_image_never_built_shows_err_image_pull_naming_it(
    lab: LabHandle, default_service_account: None
) -> None:
    name = "never-built"
    image = "vip/kube-controller-manager:never-built"
    apply(lab, pod_obj(name, {"name": "c", "image": image}))
    start = time.monotonic()
    try:

        def pull_failed() -> Any:
            cs = container_status(get_pod(lab, name))
            waiting = cs.state.waiting if cs is not None and cs.state else None
            if waiting is None or waiting.reason not in ("ErrImagePull", "ImagePullBackOff"):
                return None
            return waiting

        # With no registry in the lab the pull can only fail (after DNS gives up).
        waiting = wait_for("ErrImagePull", pull_failed, timeout=240, every=1)
        took = time.monotonic() - start
        print(f"\n[node e2e] created -> {waiting.reason}: {took:.1f}s ({waiting.message})")
        assert image in (waiting.message or ""), waiting
        pod = get_pod(lab, name)
        assert pod is not None and pod.status is not None and pod.status.phase == "Pending"
    finally:
        delete(lab, "pod", name)


def test_a_killed_container_is_restarted_with_a_new_container_id(
    lab: LabHandle, default_service_account: None
) -> None:
    name = "killme"
    apply(lab, pod_obj(name, {"name": "c", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"]}))
    try:
        first = wait_for("killme running", lambda: running_id(get_pod(lab, name)), timeout=120)
        pod = get_pod(lab, name)
        assert pod is not None
        before = container_status(pod).restartCount
        pid = podproc.kill_container(lab.spec, pod, "c", signal.SIGKILL)
        start = time.monotonic()
        cs = wait_for(
            "a restart",
            lambda: (
                (c := container_status(get_pod(lab, name)))
                and c.restartCount == before + 1
                and c.state.running
                and c
            ),
            timeout=120,
        )
        print(
            f"\n[node e2e] SIGKILL of pid {pid} -> running again: {time.monotonic() - start:.1f}s"
        )
        assert cs.containerID != first
        assert cs.lastState.terminated is not None
        assert cs.lastState.terminated.containerID == first
        assert cs.lastState.terminated.exitCode == 137  # 128 + SIGKILL
    finally:
        delete(lab, "pod", name)


def _article_pods(lab: LabHandle) -> list[Pod]:
    """The Deployment's kube-controller-manager pods (not the static pod's mirror pod)."""
    return [
        p
        for p in lab.client.list(Pod, namespace="kube-system", labels={"component": KCM})
        if p.metadata is not None
        and any(o.kind == "ReplicaSet" for o in p.metadata.ownerReferences or [])
    ]


def pod_log(spec: LabSpec, pod: Pod, container: str) -> str:
    """What the node's containerd wrote for the container (/var/log/pods on the node)."""
    assert pod.metadata is not None and pod.spec is not None
    node = spec.node(str(pod.spec.nodeName))
    pod_dir = f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid}"
    logs = node.root(spec.root) / "var/log/pods" / pod_dir / container
    return "".join(f.read_text(errors="replace") for f in sorted(logs.glob("*.log")))


def test_the_article_deployment_runs_ready_on_the_real_kubelet(
    lab: LabHandle, default_service_account: None, tmp_path: Path
) -> None:
    """The seed's Deployment (test_status.article_deployment: hostNetwork false,
    seccomp RuntimeDefault, system-node-critical, probes on 10357) on a real node."""
    build_article_image(lab, tmp_path)
    lab.kubectl("apply", "-f", "-", input=article_deployment(replicas=1, cluster_name="kubernetes"))
    try:
        pod = wait_for(
            "the article's pod Ready (its startup probe on 10357 passed)",
            lambda: next((p for p in _article_pods(lab) if is_ready(p)), None),
            timeout=300,
            every=1,
        )
        assert pod.spec is not None and pod.status is not None and pod.metadata is not None
        cs = container_status(pod, KCM)
        assert cs.image.endswith(ARTICLE_IMAGE) and cs.started is True, cs
        assert not pod.spec.hostNetwork and in_pod_network(lab.spec, pod), pod.status.podIP
        assert pod.spec.priority == SYSTEM_NODE_CRITICAL
        pid = podproc.container_pid(lab.spec, pod, KCM)
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), "no seccomp filter (RuntimeDefault)"
        # From the pod network it reached the API server and stands by for the Lease.
        wait_for(
            "the standby to try the Lease",
            lambda: "attempting to acquire leader lease" in pod_log(lab.spec, pod, KCM).lower(),
            timeout=120,
            every=2,
        )
    finally:
        lab.kubectl("delete", "deployment", KCM, "-n", "kube-system", "--ignore-not-found")
        wait_for("the article's pods gone", lambda: not _article_pods(lab), timeout=120)


# --- static pods: park and restore, measured -------------------------------------------------


@dataclass(frozen=True)
class MirrorEvent:
    t: float  # time.monotonic()
    type: str  # ADDED, MODIFIED, DELETED
    api_uid: str
    static_uid: str  # kubernetes.io/config.mirror
    deleting: bool  # metadata.deletionTimestamp set
    grace: int | None  # metadata.deletionGracePeriodSeconds
    state: str  # running / terminated / waiting / none
    reason: str
    message: str
    container_id: str


class MirrorWatch:
    """Every event of one mirror pod, as `kubectl get --watch` streams them."""

    def __init__(self, lab: LabHandle, name: str, container: str) -> None:
        self.name, self.container = name, container
        self.events: list[MirrorEvent] = []
        self._watch = KubectlWatch(
            str(lab.kubeconfig), "--field-selector", f"metadata.name={name}",
            on_event=self._add, name=f"watch-{name}",
        )  # fmt: skip

    @property
    def error(self) -> str | None:
        return self._watch.error

    def _add(self, t: float, kind: str, obj: dict[str, Any]) -> None:
        pod = Pod.from_dict(obj)
        assert isinstance(pod, Pod)
        self.events.append(self._event(kind, pod, t))

    def _event(self, kind: str, pod: Pod, t: float) -> MirrorEvent:
        meta = pod.metadata
        assert meta is not None
        cs = container_status(pod, self.container)
        state, reason, message, cid = "none", "", "", ""
        if cs is not None and cs.state is not None:
            cid = cs.containerID or ""
            if cs.state.running is not None:
                state = "running"
            elif cs.state.terminated is not None:
                state, reason = "terminated", cs.state.terminated.reason or ""
            elif cs.state.waiting is not None:
                state = "waiting"
                reason, message = cs.state.waiting.reason or "", cs.state.waiting.message or ""
        return MirrorEvent(
            t=t,
            type=kind,
            api_uid=meta.uid or "",
            static_uid=(meta.annotations or {}).get("kubernetes.io/config.mirror", ""),
            deleting=meta.deletionTimestamp is not None,
            grace=meta.deletionGracePeriodSeconds,
            state=state,
            reason=reason,
            message=message,
            container_id=cid.split("://", 1)[-1],
        )

    def between(self, start: float, end: float) -> list[MirrorEvent]:
        return [e for e in list(self.events) if start <= e.t <= end]

    def close(self) -> None:
        self._watch.close()


BACKOFF_MESSAGE = re.compile(r"back-off ((?:\d+m)?\d+s) restarting failed container")


def go_seconds(duration: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", duration)
    assert m is not None, duration
    return 60.0 * int(m[1] or 0) + int(m[2])


@dataclass
class Cycle:
    """One park (manifest moved out of the manifest directory) and restore (moved back)."""

    delay: float  # removal -> the file back
    stopped_after: float | None = None  # removal -> the container's process gone
    exited_after: float | None = None  # removal -> crictl shows it exited (or gone)
    mirror_gone_after: float | None = None  # removal -> mirror pod DELETED (None: it stayed)
    left_at_restore: int = 0  # containers of the pod UID still there when the file came back
    running_after: float = 0.0  # restore -> a new container running (crictl)
    api_running_after: float | None = None  # restore -> the mirror pod says so (None: not yet)
    api_state: str = ""  # what the mirror pod said when we stopped waiting for it
    backoff: str = ""  # the kubelet's "back-off 20s ..." seen on the mirror pod, if any
    uid_before: str = ""
    uid_after: str = ""
    api_uid_before: str = ""
    api_uid_after: str = ""
    terminated_seen: bool = False  # the mirror pod showed the container terminated
    deleting_events: list[MirrorEvent] = field(default_factory=list)
    deleted_at: float | None = None  # monotonic time of the DELETED event

    @property
    def backoff_s(self) -> float | None:
        return go_seconds(self.backoff) if self.backoff else None

    def line(self) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}s"

        return (
            f"delay {self.delay:4.1f}s: stopped {f(self.stopped_after)}, mirror pod gone "
            f"{f(self.mirror_gone_after)}, containers left at restore "
            f"{self.left_at_restore}, running again {f(self.running_after)} after the "
            f"restore (API {f(self.api_running_after)}), back-off {self.backoff or 'none'}"
        )


class StaticPod:
    """kube-controller-manager's static pod on the first control plane, parked and
    restored as kubehoist does it: its manifest renamed out of the manifest directory
    and back, the same bytes at the same path."""

    def __init__(self, lab: LabHandle, component: str = KCM) -> None:
        self.lab, self.component = lab, component
        self.node = lab.spec.api_node
        self.mirror = f"{component}-{self.node.name}"
        self.manifest = self.node.manifests_dir(lab.spec.root) / f"{component}.yaml"
        self.parked = lab.spec.root / "parked-by-test" / f"{component}.yaml"
        self.bytes = self.manifest.read_bytes()

    def running(self) -> tuple[str, str] | None:
        """(container id, pod UID) of the running container, from containerd."""
        for cid, (state, uid) in containers(self.lab.spec, self.node, self.component).items():
            if state == "CONTAINER_RUNNING":
                return cid, uid
        return None

    def settled(self) -> tuple[str, Pod]:
        """Wait until the container runs and the mirror pod says so; its static UID."""

        def ok() -> tuple[str, Pod] | None:
            run = self.running()
            pod = get_pod(self.lab, self.mirror, "kube-system")
            if run is None or pod is None or pod.metadata is None:
                return None
            if (running_id(pod, self.component) or "").split("://")[-1] != run[0]:
                return None
            return run[1], pod

        found: tuple[str, Pod] = wait_for(
            f"{self.mirror} running", ok, timeout=BACKOFF_CAP_S + 60, every=0.5
        )
        return found

    def restore_file(self) -> None:
        if self.parked.exists():
            self.parked.replace(self.manifest)

    def cycle(self, watch: MirrorWatch, delay: float, *, until_gone: bool = False) -> Cycle:
        """Park, wait `delay` (or until the mirror pod is gone), restore, wait until a new
        container runs; measured."""
        uid, pod = self.settled()
        assert pod.metadata is not None
        run = self.running()
        assert run is not None
        old_id = run[0]
        pid = podproc.container_pid(self.lab.spec, pod, self.component)
        cyc = Cycle(delay=delay, uid_before=uid, api_uid_before=pod.metadata.uid or "")
        self.parked.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.manifest.replace(self.parked)
        deadline = t0 + (60.0 if until_gone else delay)
        last_ps = 0.0
        while True:
            now = time.monotonic()
            if cyc.stopped_after is None and not Path(f"/proc/{pid}").exists():
                cyc.stopped_after = now - t0
            if cyc.exited_after is None and now - last_ps > 0.25:
                last_ps = now
                state = containers(self.lab.spec, self.node, self.component).get(old_id)
                if state is None or state[0] != "CONTAINER_RUNNING":
                    cyc.exited_after = time.monotonic() - t0
            gone = any(e.type == "DELETED" for e in watch.between(t0, now))
            if now >= deadline or (until_gone and gone and cyc.stopped_after is not None):
                break
            time.sleep(0.02)
        # What the kubelet may back off from: the parked pod's containers not yet removed.
        cyc.left_at_restore = sum(
            1
            for _, owner in containers(self.lab.spec, self.node, self.component).values()
            if owner == uid
        )
        assert self.parked.read_bytes() == self.bytes
        t_restore = time.monotonic()
        self.parked.replace(self.manifest)
        cyc.delay = t_restore - t0

        def new_container() -> tuple[str, str] | None:
            r = self.running()
            return r if r is not None and r[0] != old_id else None

        new_id, new_uid = wait_for(
            "a new container running", new_container, timeout=BACKOFF_CAP_S + 60, every=0.2
        )
        cyc.running_after = time.monotonic() - t_restore
        cyc.uid_after = new_uid
        t_running = time.monotonic()

        def reported() -> Pod | None:
            pod = get_pod(self.lab, self.mirror, "kube-system")
            return pod if (running_id(pod, self.component) or "").endswith(new_id) else None

        t_reported: float | None = None
        with contextlib.suppress(AssertionError):
            wait_for("the mirror pod to report it", reported, timeout=120, every=0.2)
            t_reported = time.monotonic()
        mirror_now = get_pod(self.lab, self.mirror, "kube-system")
        cs = container_status(mirror_now, self.component)
        cyc.api_state = (
            f"mirror pod: {cs.containerID} {cs.state} restartCount {cs.restartCount}"
            if cs is not None
            else f"mirror pod: {mirror_now.status if mirror_now else None}"
        )
        events = watch.between(t0, time.monotonic())
        parked = [e for e in events if e.t < t_restore]
        restored = [e for e in events if e.t >= t_restore]
        deleted = [e for e in parked if e.type == "DELETED"]
        if deleted:
            cyc.deleted_at = deleted[0].t
            cyc.mirror_gone_after = deleted[0].t - t0
        cyc.terminated_seen = any(
            e.state == "terminated" and e.container_id == old_id for e in parked
        )
        cyc.deleting_events = [e for e in parked if e.deleting]
        first_running = next(
            (e for e in restored if e.state == "running" and e.container_id == new_id), None
        )
        if first_running is not None:
            cyc.api_running_after = first_running.t - t_restore
        elif t_reported is not None:  # (the watch missed it)
            cyc.api_running_after = t_reported - t_restore
        if t_reported is not None and mirror_now is not None and mirror_now.metadata is not None:
            cyc.api_uid_after = mirror_now.metadata.uid or ""
            assert (mirror_now.metadata.annotations or {}).get("kubernetes.io/config.mirror") == uid
        for e in restored:
            m = BACKOFF_MESSAGE.search(e.message)
            if e.reason == "CrashLoopBackOff" and m and e.t < t_running:
                cyc.backoff = m[1]
        return cyc


@pytest.fixture
def kcm_static(lab: LabHandle) -> Iterator[StaticPod]:
    static = StaticPod(lab)
    try:
        yield static
    finally:
        static.restore_file()
        assert static.manifest.read_bytes() == static.bytes
        cp = lab.spec.api_node
        wait_for(
            "the static controller manager to lead again",
            lambda: (
                holder(lab, KCM).startswith(f"{cp.os_hostname}_") and renewed_within(lab, KCM, 10)
            ),
            timeout=BACKOFF_CAP_S + 120,
            every=1,
        )


def test_a_removed_static_manifest_stops_the_container_before_the_mirror_pod_goes(
    lab: LabHandle, kcm_static: StaticPod
) -> None:
    watch = MirrorWatch(lab, kcm_static.mirror, KCM)
    try:
        cyc = kcm_static.cycle(watch, 0.0, until_gone=True)
    finally:
        watch.close()
    events = ", ".join(
        f"{e.type}{'(deleting, grace ' + str(e.grace) + ')' if e.deleting else ''}:{e.state}"
        for e in cyc.deleting_events
    )
    print(
        f"\n[node e2e] static manifest removed: container process gone after "
        f"{cyc.stopped_after:.2f}s, crictl exited after {cyc.exited_after:.2f}s, mirror pod "
        f"gone after {cyc.mirror_gone_after:.2f}s; the mirror pod showed the container "
        f"terminated before it went: {cyc.terminated_seen}; events with a deletionTimestamp: "
        f"{events or 'none'}; restored {cyc.delay:.1f}s after the removal -> running again "
        f"after {cyc.running_after:.1f}s (back-off {cyc.backoff or 'none'})"
    )
    assert cyc.stopped_after is not None and cyc.stopped_after < 35  # within the grace period
    assert cyc.mirror_gone_after is not None and cyc.deleted_at is not None
    # The containers stop first; the mirror pod is deleted afterwards (housekeeping).
    assert cyc.stopped_after < cyc.mirror_gone_after
    # No graceful deletion is ever visible: a deletionTimestamp appears at most on the
    # very last update, with grace 0, immediately before the object is gone.
    for e in cyc.deleting_events:
        assert e.grace == 0, e
        assert e.t >= cyc.deleted_at - 1.0, (e, cyc.deleted_at)
    assert cyc.uid_after == cyc.uid_before
    assert cyc.api_running_after is not None, cyc.api_state
    assert watch.error is None, watch.error


def test_the_restored_manifest_keeps_its_uid_and_restarts_after_the_back_off(
    lab: LabHandle, kcm_static: StaticPod
) -> None:
    """Put back byte for byte after ~1 s, ~5 s and ~30 s, then three cycles of ~2 s in a
    row. The same bytes at the same path are the same static pod (UID). Its restart is
    held back by the kubelet's crash back-off (10 s doubling to 5 min, keyed on that UID
    and the container, counted from the parked container's end) only when that exited
    container is still there when the kubelet starts the pod again: the kubelet removes
    a removed pod's containers as soon as it has finished with it, so whether it is
    there is a race, and the figures vary from run to run."""
    watch = MirrorWatch(lab, kcm_static.mirror, KCM)
    cycles: list[Cycle] = []
    try:
        for delay in (1.0, 5.0, 30.0, 2.0, 2.0, 2.0):
            cycles.append(kcm_static.cycle(watch, delay))
            print(f"\n[node e2e] {cycles[-1].line()}", flush=True)
    finally:
        watch.close()
    print("[node e2e] static pod park/restore, restore -> container running:")
    labels = ("~1s", "~5s", "~30s", "cycle 1", "cycle 2", "cycle 3")
    for label, cyc in zip(labels, cycles, strict=True):
        print(f"[node e2e]   {label:>8}: {cyc.line()}")
    held = [round(c.running_after, 1) for c in cycles if c.running_after > HELD_BACK_S]
    print(f"[node e2e]   held back (s), in order: {held or 'none'}")
    assert watch.error is None, watch.error
    steps = [10.0 * 2**k for k in range(5)] + [BACKOFF_CAP_S]
    for cyc in cycles:
        # Same bytes, same path, same node: the same static pod UID.
        assert cyc.uid_after == cyc.uid_before == cycles[0].uid_before, cyc
        # and the mirror pod reports the new container (kubehoist reads it there)
        assert cyc.api_running_after is not None, (cyc.line(), cyc.api_state)
        assert cyc.backoff_s is None or cyc.backoff_s in steps, cyc.line()
        if cyc.running_after > HELD_BACK_S:
            # Held back: by the kubelet's crash back-off, which it reports on the mirror
            # pod, and only with the parked pod's container still there to back off from.
            assert cyc.left_at_restore > 0, cyc.line()
            assert cyc.backoff_s is not None, cyc.line()
            assert cyc.running_after <= cyc.backoff_s + RESTART_SLACK_S, cyc.line()


# --- a lab of three control planes ------------------------------------------------------


@pytest.fixture(scope="module")
def ha_lab() -> Iterator[LabHandle]:
    root = (lab_root().parent / "nodes-ha").resolve()
    # No worker (the survivor below tolerates the control planes' taint): three nodes
    # beside the session lab's three are enough load for a 2-core machine.
    handle = start_lab(root, host_port() + 7, workers=0, control_planes=3)
    try:
        wait_for(
            "the default ServiceAccount",
            lambda: handle.kubectl("get", "sa", "default", "-n", NS, check=False).returncode == 0,
            timeout=180,
        )
        yield handle
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(root), check=False)


def test_a_host_network_pod_on_cp2_has_its_fqdn_hostname_in_the_lease(ha_lab: LabHandle) -> None:
    spec = ha_lab.spec
    cp2 = spec.node("cp-2")
    assert cp2.os_hostname == f"cp-2.{FQDN_DOMAIN}"
    # What `hostname` says in a hostNetwork pod there (the Node name stays cp-2).
    name = "on-cp2"
    apply(
        ha_lab,
        pod_obj(
            name,
            {"name": "c", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"]},
            nodeName="cp-2",
            hostNetwork=True,
            tolerations=[{"operator": "Exists"}],
        ),
    )
    others = [n for n in spec.control_planes if n is not cp2]
    parked = {n.name: spec.root / f"parked-{n.name}-{SCHED}.yaml" for n in others}
    try:
        pod = wait_for(
            "on-cp2 running", lambda: (p := get_pod(ha_lab, name)) and running_id(p) and p
        )
        assert pod_exec(spec, pod, "hostname").strip() == cp2.os_hostname
        # The only scheduler left is cp-2's: it leads under the OS hostname.
        for n in others:
            n.manifests_dir(spec.root).joinpath(f"{SCHED}.yaml").replace(parked[n.name])
        identity = wait_for(
            "cp-2's scheduler to lead",
            lambda: (h := holder(ha_lab, SCHED)).startswith(f"{cp2.os_hostname}_") and h,
            timeout=120,
            every=1,
        )
        print(f"\n[node e2e] kube-scheduler Lease held by {identity}")
        assert re.fullmatch(rf"{re.escape(cp2.os_hostname)}_[0-9a-f-]{{36}}", identity)
        # Its mirror pod is named after the Node, and becomes Ready (startup probe).
        mirror = wait_for(
            f"{SCHED}-cp-2 Ready",
            lambda: (p := get_pod(ha_lab, f"{SCHED}-cp-2", "kube-system")) and is_ready(p) and p,
            timeout=120,
        )
        assert mirror.spec is not None and mirror.spec.nodeName == "cp-2"
    finally:
        for n in others:
            if parked[n.name].exists():
                parked[n.name].replace(n.manifests_dir(spec.root) / f"{SCHED}.yaml")
        delete(ha_lab, "pod", name)


def _cgroup_pids(spec: LabSpec) -> set[int]:
    """Every process in the lab's cgroup trees (any hierarchy, the unified one too)."""
    pids: set[int] = set()
    for tree in Path("/sys/fs/cgroup").glob(f"*/kubehoist-{spec.lab_id}"):
        for procs in tree.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _lab_processes(spec: LabSpec) -> dict[int, str]:
    """Processes of the lab: in its cgroups, naming its root, or seeing its mounts."""
    found: dict[int, str] = {}
    in_cgroups = _cgroup_pids(spec)
    root = str(spec.root).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            mounts = Path(f"/proc/{pid}/mountinfo").read_bytes()
        except OSError:
            continue
        if pid in in_cgroups or root in cmdline or root in mounts:
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
    return found


def _node_leases_renewed_since(lab: LabHandle, since: datetime) -> list[str]:
    """The nodes whose kubelet renewed its node Lease after `since`."""
    out = []
    for node in lab.spec.nodes:
        try:
            spec = lab.client.get(Lease, node.name, namespace="kube-node-lease").spec
        except ApiError:
            continue
        if spec is not None and spec.renewTime is not None and spec.renewTime > since:
            out.append(node.name)
    return out


SURVIVOR = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "survivor", "namespace": NS},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "survivor"}},
        "template": {
            "metadata": {"labels": {"app": "survivor"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "tolerations": [{"operator": "Exists"}],  # control planes only
                "containers": [
                    {"name": "c", "image": BUSYBOX_IMAGE, "command": ["sleep", "100000"]}
                ],
            },
        },
    },
}


def _survivor(lab: LabHandle) -> Pod | None:
    pods = lab.client.list(Pod, namespace=NS, labels={"app": "survivor"})
    return next((p for p in pods if is_ready(p)), None)


def test_a_lab_killed_like_a_machine_crash_comes_back_with_lab_up(ha_lab: LabHandle) -> None:
    spec = ha_lab.spec
    apply(ha_lab, SURVIVOR)
    before = wait_for("the survivor Ready", lambda: _survivor(ha_lab), timeout=180)
    marker = f"before-crash-{os.getpid()}"
    ha_lab.kubectl("create", "configmap", marker, "-n", NS)
    # The crash: SIGKILL the supervisor and the nodes' inits, then everything else
    # (kubelets, containerd, shims, containers, etcd, kube-apiserver), nothing stopped.
    inits = [labnode.init_pid(spec, n) for n in spec.nodes]
    supervisor_pid = int((spec.run_dir / "supervisor.pid").read_text())
    for pid in (supervisor_pid, *inits):
        os.kill(pid, signal.SIGKILL)
    crashed_at = datetime.now(UTC)
    time.sleep(0.5)
    survived = _lab_processes(spec)
    deadline = time.monotonic() + 30
    while (left := _lab_processes(spec)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert _lab_processes(spec) == {}
    print(
        f"\n[node e2e] crash: {len(survived)} processes outlived the supervisor and the "
        f"nodes' inits by 0.5 s (SIGKILLed then): "
        f"{sorted({c.split()[0].rsplit('/', 1)[-1] for c in survived.values()})}"
    )
    start = time.monotonic()
    kubehoist("lab", "up", "--root", str(spec.root))
    up_took = time.monotonic() - start
    fresh_when_up = _node_leases_renewed_since(ha_lab, crashed_at)
    wait_for(
        "every kubelet back (node Lease renewed since the crash)",
        lambda: (
            sorted(_node_leases_renewed_since(ha_lab, crashed_at))
            == sorted(n.name for n in spec.nodes)
        ),
        timeout=240,
        every=1,
    )
    all_back = time.monotonic() - start
    ha_lab.kubectl("get", "configmap", marker, "-n", NS)  # etcd kept its data
    for cp in spec.control_planes:
        for component in (KCM, SCHED):

            def runs(component: str = component, node: LabNode = cp) -> bool:
                states = {s for s, _ in containers(spec, node, component).values()}
                return "CONTAINER_RUNNING" in states

            wait_for(f"{component} running again on {cp.name}", runs, timeout=180, every=1)
    wait_for(
        "a static controller manager leading again",
        lambda: renewed_within(ha_lab, KCM, 10),
        timeout=180,
        every=1,
    )
    after = wait_for("the survivor Ready again", lambda: _survivor(ha_lab), timeout=240, every=1)
    assert running_id(after) != running_id(before)
    print(
        f"[node e2e] lab up after the crash returned in {up_took:.1f}s, kubelets renewed "
        f"then: {sorted(fresh_when_up)}; every node back after {all_back:.1f}s"
    )
    # `lab up` reports ready only once the kubelets are back, not on the Ready
    # condition the nodes had before the crash.
    assert sorted(fresh_when_up) == sorted(n.name for n in spec.nodes)


def test_lab_down_leaves_no_process_mount_netns_or_cgroup(ha_lab: LabHandle) -> None:
    spec = ha_lab.spec
    apply(ha_lab, SURVIVOR)
    wait_for("the survivor Ready", lambda: _survivor(ha_lab), timeout=240, every=1)
    assert _cgroup_pids(spec), "the lab runs nothing in its cgroups"
    assert netns.lab_namespaces(spec)
    start = time.monotonic()
    kubehoist("lab", "down", "--root", str(spec.root))
    print(f"\n[node e2e] lab down: {time.monotonic() - start:.1f}s")
    assert _lab_processes(spec) == {}
    mounts = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError):
            mounts += [line for line in info.read_text().splitlines() if str(spec.root) in line]
    assert mounts == []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert f"kh-{spec.lab_id}-" not in names.stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"kh{spec.lab_id}" not in links.stdout
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/kubehoist-{spec.lab_id}"))
    assert cgroups == []
