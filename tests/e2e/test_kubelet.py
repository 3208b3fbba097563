"""The lab kubelet end to end: static pods and their mirror pods, scheduled pods with
probes, restarts and status, and the article's story — a Deployment of
kube-controller-manager that stands by while the static pod leads, and takes over
when the static pod's manifest is removed."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from kubehoist.lab.kubelet.cleanup import launcher_pids
from tests.e2e.conftest import LabHandle, kubehoist, lab_root, start_lab

pytestmark = pytest.mark.lab

NS = "default"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except ApiError as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")


def apply(lab: LabHandle, obj: dict[str, Any]) -> None:
    lab.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def pod_obj(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container], **spec},
    }


def get_pod(lab: LabHandle, name: str, namespace: str = NS) -> Pod | None:
    try:
        return lab.client.get(Pod, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def container_status(pod: Pod | None) -> Any:
    if pod is None or pod.status is None or not pod.status.containerStatuses:
        return None
    return pod.status.containerStatuses[0]


def is_ready(pod: Pod | None) -> bool:
    if pod is None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def lease_holder(lab: LabHandle, name: str) -> str:
    lease = lab.client.get(Lease, name, namespace="kube-system")
    return (lease.spec.holderIdentity if lease.spec else None) or ""


def delete_pod(lab: LabHandle, name: str) -> None:
    lab.kubectl("delete", "pod", name, "-n", NS, "--ignore-not-found", "--wait=false")


@pytest.fixture(autouse=True, scope="module")
def default_service_account(lab: LabHandle) -> None:
    """The ServiceAccount admission refuses pods until KCM has made `default`."""
    wait_for(
        "the default ServiceAccount",
        lambda: (
            lab.kubectl("get", "serviceaccount", "default", "-n", NS, check=False).returncode == 0
        ),
        timeout=120,
    )


# --- static pods ----------------------------------------------------------------------


def test_static_pods_have_mirror_pods_and_hold_the_leases(lab: LabHandle) -> None:
    node = lab.spec.api_node
    for component in ("kube-controller-manager", "kube-scheduler"):
        name = f"{component}-{node.name}"
        pod = wait_for(
            f"{name} Ready",
            lambda n=name: (p := get_pod(lab, n, "kube-system")) and is_ready(p) and p,
            timeout=120,
        )
        assert pod.metadata is not None and pod.metadata.annotations is not None
        assert "kubernetes.io/config.mirror" in pod.metadata.annotations
        owners = pod.metadata.ownerReferences or []
        assert [(o.kind, o.name, o.controller) for o in owners] == [("Node", node.name, True)]
        assert pod.status is not None and pod.status.podIP == node.ip  # hostNetwork
        # hostname = node name, so the lease identity begins with it
        wait_for(
            f"{component} lease held by {node.name}",
            lambda c=component: lease_holder(lab, c).startswith(f"{node.name}_"),
            timeout=90,
        )


# --- scheduled pods -------------------------------------------------------------------

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
                "containers": [
                    {
                        "name": "web",
                        "image": "busybox:1.36",
                        "command": ["python3", "-m", "http.server", "8080"],
                        "env": [
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            }
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/", "port": 8080},
                            "periodSeconds": 1,
                        },
                    }
                ],
            },
        },
    },
}


def _web_pods(lab: LabHandle) -> list[Pod]:
    return [
        p
        for p in lab.client.list(Pod, namespace=NS, labels={"app": "web"})
        if p.metadata is not None and p.metadata.deletionTimestamp is None
    ]


def test_deployment_is_scheduled_ready_and_replaced(lab: LabHandle) -> None:
    apply(lab, WEB)
    try:
        workers = {n.name: n for n in lab.spec.workers}

        def two_ready() -> list[Pod] | None:
            pods = _web_pods(lab)
            return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

        pods = wait_for("2 web pods Ready", two_ready, timeout=90)
        for pod in pods:
            assert pod.spec is not None and pod.status is not None
            assert pod.spec.nodeName in workers  # the real scheduler placed it
            cidr = ipaddress.ip_network(workers[pod.spec.nodeName].pod_cidr)
            assert ipaddress.ip_address(pod.status.podIP or "") in cidr
            cs = container_status(pod)
            assert cs.state.running is not None and cs.containerID.startswith("lab://")
        victim = pods[0]
        assert victim.metadata is not None and victim.metadata.name is not None
        victim_name: str = victim.metadata.name
        old_names = {p.metadata.name for p in pods if p.metadata}
        lab.kubectl("delete", "pod", victim_name, "-n", NS, "--wait=false")

        def replaced() -> bool:
            now = _web_pods(lab)
            names = {p.metadata.name for p in now if p.metadata}
            return (
                len(now) == 2
                and victim_name not in names
                and bool(names - old_names)
                and all(is_ready(p) for p in now)
            )

        wait_for("a Ready replacement from the ReplicaSet", replaced, timeout=90)
        wait_for(
            "the deleted pod removed",
            lambda: get_pod(lab, victim_name) is None,
            timeout=30,
        )
    finally:
        lab.kubectl("delete", "deployment", "web", "-n", NS, "--ignore-not-found")


def test_liveness_failure_restarts_with_a_new_container_id(lab: LabHandle) -> None:
    name = "liveness"
    apply(
        lab,
        pod_obj(
            name,
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 600"],
                "livenessProbe": {
                    "exec": {"command": ["test", "-f", "/tmp/alive"]},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            },
        ),
    )
    try:
        first = wait_for(
            "running",
            lambda: (
                (cs := container_status(get_pod(lab, name))) and cs.state.running and cs.containerID
            ),
        )
        cs = wait_for(
            "a restart",
            lambda: (
                (c := container_status(get_pod(lab, name)))
                and c.restartCount >= 1
                and c.state.running
                and c
            ),
        )
        assert cs.containerID != first
        assert cs.lastState.terminated is not None
        assert cs.lastState.terminated.containerID == first
    finally:
        delete_pod(lab, name)


def test_unknown_image_reports_err_image_pull_naming_the_image(lab: LabHandle) -> None:
    name = "unknown-image"
    image = "registry.example.invalid/nothing:1.0"
    apply(lab, pod_obj(name, {"name": "c", "image": image}))
    try:
        cs = wait_for(
            "ErrImagePull",
            lambda: (
                (c := container_status(get_pod(lab, name)))
                and c.state.waiting
                and c.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
                and c
            ),
        )
        assert cs.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
        assert image in (cs.state.waiting.message or "")
        pod = get_pod(lab, name)
        assert pod is not None and pod.status is not None and pod.status.phase == "Pending"
    finally:
        delete_pod(lab, name)


def test_killed_container_process_is_noticed_and_restarted(lab: LabHandle) -> None:
    name = "killme"
    apply(lab, pod_obj(name, {"name": "c", "image": "busybox", "command": ["sleep", "600"]}))
    try:
        first = wait_for(
            "running",
            lambda: (
                (cs := container_status(get_pod(lab, name))) and cs.state.running and cs.containerID
            ),
        )
        pod = get_pod(lab, name)
        assert pod is not None and pod.metadata is not None and pod.spec is not None
        node_root = lab.spec.node(pod.spec.nodeName or "").root(lab.spec.root)
        uid = pod.metadata.uid or ""
        pids = [
            p
            for p in launcher_pids(node_root)
            if uid.encode() in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        cs = wait_for(
            "a restart",
            lambda: (
                (c := container_status(get_pod(lab, name)))
                and c.restartCount >= 1
                and c.state.running
                and c
            ),
        )
        assert cs.containerID != first
        assert cs.lastState.terminated.exitCode == 137
    finally:
        delete_pod(lab, name)


def test_volumes_env_and_hostname(lab: LabHandle) -> None:
    name = "volumes"
    lab.kubectl(
        "create",
        "configmap",
        "kh-cm",
        "-n",
        NS,
        "--from-literal=greeting=hello",
        "--dry-run=client",
        "-o",
        "yaml",
    )
    apply(
        lab,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kh-cm", "namespace": NS},
            "data": {"greeting": "hello"},
        },
    )
    script = (
        "echo host=$(hostname) pod=$POD_NAME ip=$POD_IP; cat /cm/greeting; echo;"
        " ls /var/run/secrets/kubernetes.io/serviceaccount; touch /cm/x 2>/dev/null || echo ro;"
        " echo data > /scratch/f && cat /scratch/f; exec sleep 600"
    )
    apply(
        lab,
        pod_obj(
            name,
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", script],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "volumeMounts": [
                    {"name": "cm", "mountPath": "/cm"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            },
            volumes=[
                {"name": "cm", "configMap": {"name": "kh-cm"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        ),
    )
    try:
        pod = wait_for("running", lambda: (p := get_pod(lab, name)) and is_ready(p) and p)
        assert pod.status is not None
        out = wait_for(
            "the log",
            lambda: (
                (
                    r := kubehoist("lab", "logs", name, "--root", str(lab.spec.root), check=False)
                ).returncode
                == 0
                and "data" in r.stdout
                and r.stdout
            ),
        )
        assert f"host={name} pod={name} ip={pod.status.podIP}" in out
        assert "hello" in out and "token" in out and "ca.crt" in out and "ro" in out
    finally:
        delete_pod(lab, name)


def test_termination_messages(lab: LabHandle) -> None:
    """What a container writes to /dev/termination-log (an empty file per start, also
    for a non-root user) comes back in state.terminated.message after exit 0 and after a
    failure, and in lastState after a restart; FallbackToLogsOnError gives the log's
    tail for a failure that left no message. The host's /dev is not written."""
    token = uuid.uuid4().hex
    # a file left by an earlier start, or anything else, is not this start's message
    fresh = "test -s /dev/termination-log && exit 99;"
    pods = {
        "msg-done": (
            f"{fresh} echo 'parked {token}' > /dev/termination-log; echo noise",
            {"securityContext": {"runAsUser": 65534}},
            "Never",
        ),
        "msg-failed": (f"{fresh} printf 'removed' > /dev/termination-log; exit 3", {}, "Never"),
        "msg-logs": (
            "echo starting; echo 'boom: no such thing' >&2; exit 2",
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            "Never",
        ),
        "msg-restarted": (
            f'{fresh} echo "run $(cat /proc/sys/kernel/random/uuid)" > /dev/termination-log;'
            " exit 1",
            {},
            "OnFailure",
        ),
    }
    for name, (script, extra, policy) in pods.items():
        container = {"name": "c", "image": "busybox", "command": ["sh", "-c", script], **extra}
        apply(lab, pod_obj(name, container, restartPolicy=policy))
    try:

        def terminated(name: str) -> Any:
            cs = container_status(get_pod(lab, name))
            return cs is not None and cs.state.terminated is not None and cs.state.terminated

        done = wait_for("msg-done ended", lambda: terminated("msg-done"), timeout=90)
        assert (done.exitCode, done.reason, done.message) == (0, "Completed", f"parked {token}\n")
        failed = wait_for("msg-failed ended", lambda: terminated("msg-failed"), timeout=90)
        assert (failed.exitCode, failed.reason, failed.message) == (3, "Error", "removed")
        logs = wait_for("msg-logs ended", lambda: terminated("msg-logs"), timeout=90)
        assert (logs.exitCode, logs.message) == (2, "starting\nboom: no such thing\n")

        def restarted() -> Any:
            cs = container_status(get_pod(lab, "msg-restarted"))
            if cs is None or not cs.restartCount or cs.lastState.terminated is None:
                return None
            return cs

        cs = wait_for("msg-restarted restarted", restarted, timeout=90)
        last = cs.lastState.terminated
        assert last.exitCode == 1 and re.fullmatch(r"run [0-9a-f-]{36}\n", last.message or "")
        now = cs.state.terminated or cs.state.running or cs.state.waiting
        assert now is not None
        if cs.state.terminated is not None:  # a start of its own, with its own message
            assert cs.state.terminated.message != last.message
        host_file = Path("/dev/termination-log")
        assert not host_file.is_file() or token not in host_file.read_text(errors="replace")
    finally:
        for name in pods:
            delete_pod(lab, name)


# --- the article ----------------------------------------------------------------------

ARTICLE_FLAGS = [
    "kube-controller-manager",
    "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
    "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
    "--bind-address=0.0.0.0",
    "--client-ca-file=/etc/kubernetes/pki/ca.crt",
    "--cluster-name=kubernetes",
    "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
    "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
    "--controllers=*,bootstrapsigner,tokencleaner",
    "--kubeconfig=/etc/kubernetes/controller-manager.conf",
    "--leader-elect=true",
    "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
    "--root-ca-file=/etc/kubernetes/pki/ca.crt",
    "--service-account-private-key-file=/etc/kubernetes/pki/sa.key",
    "--use-service-account-credentials=true",
    "--secure-port=10357",
    "--v=6",
]


def article_deployment(image: str, node: str) -> dict[str, Any]:
    """The article's Deployment; only the image and the nodeSelector are the lab's."""
    probe = {
        "httpGet": {"path": "/healthz", "port": 10357, "scheme": "HTTPS"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 15,
    }
    labels = {"component": "kube-controller-manager", "tier": "control-plane"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "kube-controller-manager",
            "namespace": "kube-system",
            "labels": labels,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"component": "kube-controller-manager"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "kube-controller-manager",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ARTICLE_FLAGS,
                            "resources": {"requests": {"cpu": "200m"}},
                            "livenessProbe": {**probe, "failureThreshold": 8},
                            "startupProbe": {**probe, "failureThreshold": 24},
                        }
                    ],
                    "hostNetwork": False,
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    }


@pytest.fixture
def article_image(lab: LabHandle, tmp_path: Path) -> str:
    """The article's image: FROM the KCM image plus the kubeadm PKI and kubeconfig."""
    etc = lab.spec.api_node.root(lab.spec.root) / "etc/kubernetes"
    shutil.copytree(etc / "pki", tmp_path / "pki")
    shutil.copy(etc / "controller-manager.conf", tmp_path / "controller-manager.conf")
    (tmp_path / "Dockerfile").write_text(
        f"FROM registry.k8s.io/kube-controller-manager:{lab.spec.kubernetes_version}\n\n"
        "# copied from the kubeadm control-plane node\n"
        "ADD pki /etc/kubernetes/pki/\n"
        "ADD controller-manager.conf /etc/kubernetes/controller-manager.conf\n"
    )
    image = "vip/kube-controller-manager:lab-multi-region"
    lab.kubehoist("lab", "image", "build", "-t", image, str(tmp_path))
    return image


@pytest.fixture
def parked_manifest(lab: LabHandle) -> Iterator[tuple[Path, Path]]:
    """Where the static KCM manifest is, and where the test may park it; put back after."""
    manifest = lab.spec.api_node.manifests_dir(lab.spec.root) / "kube-controller-manager.yaml"
    parked = lab.spec.root / "parked-kube-controller-manager.yaml"
    yield manifest, parked
    if parked.exists():
        parked.replace(manifest)


def test_article_deployment_stands_by_then_leads_when_the_static_pod_goes(
    lab: LabHandle,
    article_image: str,
    parked_manifest: tuple[Path, Path],
    record_property: Callable[[str, object], None],
) -> None:
    cp = lab.spec.api_node
    worker = lab.spec.workers[0].name
    wait_for(
        "the static KCM leads",
        lambda: lease_holder(lab, "kube-controller-manager").startswith(f"{cp.name}_"),
        timeout=90,
    )
    apply(lab, article_deployment(article_image, worker))
    try:
        selector: dict[str, Any] = {"component": "kube-controller-manager"}

        def deployment_pod() -> Pod | None:
            for p in lab.client.list(Pod, namespace="kube-system", labels=selector):
                if (
                    p.spec
                    and p.spec.nodeName == worker
                    and p.metadata
                    and p.metadata.deletionTimestamp is None
                ):
                    return p
            return None

        pod = wait_for(
            "the Deployment's pod running",
            lambda: (
                (p := deployment_pod()) and (cs := container_status(p)) and cs.state.running and p
            ),
            timeout=120,
        )
        assert pod.metadata is not None and pod.metadata.name is not None
        name = pod.metadata.name

        def log() -> str:
            r = lab.kubehoist("lab", "logs", name, "-n", "kube-system", check=False)
            return r.stdout if r.returncode == 0 else ""

        wait_for(
            "the standby's log to show it waiting for the lease",
            lambda: (
                "Attempting to acquire leader lease" in log() and "Failed to acquire lease" in log()
            ),
            timeout=90,
        )
        # It stays a standby: the static pod keeps the lease for longer than a lease term.
        time.sleep(20)
        assert lease_holder(lab, "kube-controller-manager").startswith(f"{cp.name}_")
        assert is_ready(get_pod(lab, name, "kube-system"))  # startup probe passed

        manifest, parked = parked_manifest
        start = time.monotonic()
        manifest.replace(parked)
        holder = wait_for(
            "the Deployment's pod to lead",
            lambda: (
                (h := lease_holder(lab, "kube-controller-manager")).startswith(f"{name}_") and h
            ),
            timeout=90,
        )
        took = time.monotonic() - start
        record_property("static_to_deployment_handover_seconds", round(took, 1))
        print(f"\nstatic -> Deployment leader hand-over: {took:.1f}s (holder {holder})")
        wait_for(
            "the mirror pod deleted",
            lambda: get_pod(lab, f"kube-controller-manager-{cp.name}", "kube-system") is None,
            timeout=60,
        )
    finally:
        manifest, parked = parked_manifest
        if parked.exists():
            parked.replace(manifest)
        lab.kubectl(
            "delete",
            "deployment",
            "kube-controller-manager",
            "-n",
            "kube-system",
            "--ignore-not-found",
            "--wait=false",
        )
        wait_for(
            "the static KCM to lead again",
            lambda: lease_holder(lab, "kube-controller-manager").startswith(f"{cp.name}_"),
            timeout=150,
        )


# --- nothing left behind --------------------------------------------------------------


def test_lab_down_leaves_no_pod_process_mount_netns_or_veth() -> None:
    root = (lab_root().parent / "kubelet-down").resolve()
    handle = start_lab(root, 16743, workers=1)
    spec = handle.spec
    try:
        # The ServiceAccount admission needs the `default` ServiceAccount, made by KCM.
        wait_for(
            "the default ServiceAccount",
            lambda: (
                handle.kubectl("get", "serviceaccount", "default", "-n", NS, check=False).returncode
                == 0
            ),
            timeout=120,
        )
        apply(
            handle,
            pod_obj("sleeper", {"name": "c", "image": "busybox", "command": ["sleep", "600"]}),
        )
        wait_for(
            "the pod running",
            lambda: (cs := container_status(get_pod(handle, "sleeper"))) and cs.state.running,
            timeout=120,
        )
        pod_netns = [
            n
            for n in os.listdir("/run/netns")
            if n.startswith(f"kh-{spec.lab_id}-") and "-pod-" in n
        ]
        assert pod_netns, "the pod has its own network namespace"
    finally:
        kubehoist("lab", "down", "--root", str(root))
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(f"kh-{spec.lab_id}-")]
    assert leftovers == []
    for node in spec.nodes:
        assert launcher_pids(node.root(spec.root)) == []
    mounts = [m for m in Path("/proc/self/mounts").read_text().splitlines() if str(root) in m]
    assert mounts == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"kh{spec.lab_id}" not in links.stdout
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmd and int(pid) != os.getpid():
            procs.append(cmd.replace(b"\0", b" ")[:200])
    assert procs == []
    kubehoist("lab", "down", "--purge", "--root", str(root), check=False)
