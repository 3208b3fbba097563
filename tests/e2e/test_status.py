"""`kubehoist status` and `kubehoist watch` on the lab's real binaries.

In order: right after `lab up` the static pods lead alone (NoStandby); with the
article's Deployment (its image built the article's way: the kubeadm PKI and
controller-manager.conf ADDed over registry.k8s.io/kube-controller-manager) the
Deployment pods are standbys (Healthy); killing the leader's process shows up in
`watch --output jsonl` as a leader change whose lease gap matches the election
timing, and `status` names the new holder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from kubehoist.lab import podproc
from tests.e2e.conftest import LabHandle

pytestmark = pytest.mark.lab

KCM = "kube-controller-manager"
SCHED = "kube-scheduler"
IMAGE = "vip/kube-controller-manager:v1.36.3-vip"
LEASE_DURATION_S = 15.0
RETRY_MAX_S = 2.0 * 2.2  # retry period 2 s with client-go's jitter factor 1.2
SLACK_S = 2.0  # watch latency, a loaded 2-core machine
KUBEHOIST = (sys.executable, "-m", "kubehoist")


def status(lab: LabHandle, *args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [*KUBEHOIST, "status", "--kubeconfig", str(lab.kubeconfig), "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["components"] if c["component"] == name)


def article_deployment(*, replicas: int, cluster_name: str) -> str:
    """The article's Deployment, adapted to the lab: its image, 2 replicas, no nodeSelector
    (the lab's workers stand for "other nodes"), --v=2 instead of 6 (quieter logs)."""
    flags = [
        "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--bind-address=0.0.0.0",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        f"--cluster-name={cluster_name}",
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
        "--v=2",
    ]
    probe = {
        "httpGet": {"path": "/healthz", "port": 10357, "scheme": "HTTPS"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 15,
    }
    labels = {"component": KCM, "tier": "control-plane"}
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": KCM, "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"component": KCM}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": KCM,
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": [KCM, *flags],
                            "resources": {"requests": {"cpu": "200m"}},
                            "livenessProbe": {**probe, "failureThreshold": 8},
                            "startupProbe": {**probe, "failureThreshold": 24},
                        }
                    ],
                    "hostNetwork": False,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    }
    return json.dumps(doc)


def build_article_image(lab: LabHandle, workdir: Path) -> None:
    """FROM registry.k8s.io/kube-controller-manager + ADD the PKI and the kubeconfig."""
    etc = lab.spec.api_node.root(lab.spec.root) / "etc" / "kubernetes"
    shutil.copytree(etc / "pki", workdir / "pki")
    shutil.copy(etc / "controller-manager.conf", workdir / "controller-manager.conf")
    (workdir / "Dockerfile").write_text(
        "FROM registry.k8s.io/kube-controller-manager:v1.36.3\n"
        "ADD pki /etc/kubernetes/pki\n"
        "ADD controller-manager.conf /etc/kubernetes/controller-manager.conf\n"
    )
    lab.kubehoist("lab", "image", "build", "-t", IMAGE, str(workdir))


def wait_for(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last})")


def leader_pid(lab: LabHandle, pod_name: str) -> int:
    """The host pid of the leader's container (its runc shim's record, via the pod's
    containerID)."""
    pod = lab.client.get(Pod, pod_name, namespace="kube-system")
    pid = podproc.container_pid(lab.spec, pod, KCM)
    os.kill(pid, 0)  # alive
    return pid


@pytest.fixture(scope="module")
def article(lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    build_article_image(lab, tmp_path_factory.mktemp("article-image"))
    cluster_name = "kubehoist-lab"
    lab.kubectl("apply", "-f", "-", input=article_deployment(replicas=2, cluster_name=cluster_name))
    try:
        yield
    finally:
        lab.kubectl("delete", "deployment", "-n", "kube-system", KCM, "--wait=false", check=False)


def test_after_lab_up_the_static_pods_lead_without_standby(lab: LabHandle) -> None:
    def settled() -> Any:
        code, doc = status(lab)
        # Both held by a Ready pod (the static pods pass their startup probe ~10 s in).
        ok = all(c["leader"] and c["leader"]["ready"] for c in doc["components"])
        return (code, doc) if ok else None

    code, doc = wait_for(settled, timeout=120, what="both leases held by the static pods")
    assert code == 3
    for name in (KCM, SCHED):
        comp = component(doc, name)
        assert comp["verdict"] == "NoStandby"
        assert comp["leader"]["kind"] == "static"
        assert comp["leader"]["pod"] == f"{name}-{lab.spec.api_node.name}"
        assert comp["lease"]["holderHostname"] == lab.spec.api_node.name
        assert comp["lease"]["validity"] == "unknown"  # one read cannot know more
        assert comp["standbys"] == 0


def test_with_the_article_deployment_standbys_are_listed_and_healthy(
    lab: LabHandle, article: None
) -> None:
    def healthy() -> Any:
        code, doc = status(lab, KCM)
        comp = component(doc, KCM)
        ready = sum(c["role"] == "standby" for c in comp["candidates"])
        return doc if comp["verdict"] == "Healthy" and code == 0 and ready == 2 else None

    doc = wait_for(healthy, timeout=180, what="both Deployment pods to stand by")
    comp = component(doc, KCM)
    kinds = sorted(c["kind"] for c in comp["candidates"])
    assert kinds == ["deployment", "deployment", "static"]
    roles = {c["pod"]: c["role"] for c in comp["candidates"]}
    assert roles[f"{KCM}-{lab.spec.api_node.name}"] == "leader"
    assert sorted(r for p, r in roles.items() if not p.endswith(lab.spec.api_node.name)) == [
        "standby",
        "standby",
    ]
    assert comp["standbys"] == 2
    _, observed = status(lab, KCM, "--observe", "5")
    assert component(observed, KCM)["lease"]["validity"] == "valid"


def test_killing_the_leader_is_seen_with_the_lease_gap_and_status_names_the_new_holder(
    lab: LabHandle, article: None
) -> None:
    wait_for(
        lambda: component(status(lab, KCM)[1], KCM)["verdict"] == "Healthy",
        timeout=180,
        what="Healthy before the kill",
    )
    kubeconfig = str(lab.kubeconfig)
    watch = subprocess.Popen(
        [*KUBEHOIST, "watch", KCM, "-o", "jsonl", "--for", "120", "--kubeconfig", kubeconfig],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        assert first["event"] == "observing"
        old_pod = first["pod"]
        time.sleep(3)  # let watch see a few renewals, so the gap is measured
        os.kill(leader_pid(lab, old_pod), signal.SIGKILL)
        events = []
        deadline = time.monotonic() + 60
        change = None
        while time.monotonic() < deadline:
            line = watch.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            events.append(event)
            if event["event"] == "leader_changed":
                change = event
                break
        assert change is not None, events
    finally:
        watch.send_signal(signal.SIGINT)
        try:
            watch.wait(timeout=30)
        except subprocess.TimeoutExpired:  # slow to stop on a loaded machine: not the test
            watch.kill()
            watch.wait()
    print(
        f"\nleader change {change['previous_pod']} -> {change['pod']}: "
        f"lease gap {change['lease_gap_s']}s, {change['since_last_renew_s']}s since last renewal"
    )
    assert change["previous_pod"] == old_pod
    assert change["measured"] is True
    assert change["missed_transitions"] == 0
    # A killed KCM does not release: the standbys wait out the lease duration from
    # the last change they saw, then take it at their next poll.
    assert 0.0 <= change["lease_gap_s"] <= RETRY_MAX_S + SLACK_S
    silence = change["since_last_renew_s"]
    assert LEASE_DURATION_S - SLACK_S <= silence <= LEASE_DURATION_S + RETRY_MAX_S + SLACK_S
    assert [e["event"] for e in events].count("lease_expired") <= 1
    _, doc = status(lab, KCM)
    comp = component(doc, KCM)
    assert comp["lease"]["holderIdentity"] == change["holder"]
    assert comp["leader"] is not None and comp["leader"]["pod"] == change["pod"]
