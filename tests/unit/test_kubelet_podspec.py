"""Parsing pods, probes and volumes; planning mounts; runtime argv and env; static
manifests and mirror pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubehoist.lab.kubelet import images, runtime, static, volumes
from kubehoist.lab.kubelet.podspec import (
    MIRROR_ANNOTATION,
    PodSpecError,
    Probe,
    parse_pod,
    parse_probe,
)
from kubehoist.lab.kubelet.probes import ProbeTracker, http_request, parse_status_line

KUBEADM_KCM = b"""\
apiVersion: v1
kind: Pod
metadata:
  labels: {component: kube-controller-manager, tier: control-plane}
  name: kube-controller-manager
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-controller-manager
    - --kubeconfig=/etc/kubernetes/controller-manager.conf
    image: registry.k8s.io/kube-controller-manager:v1.36.3
    livenessProbe:
      failureThreshold: 8
      httpGet: {host: 127.0.0.1, path: /healthz, port: probe-port, scheme: HTTPS}
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: kube-controller-manager
    ports: [{containerPort: 10257, name: probe-port, protocol: TCP}]
    volumeMounts:
    - {mountPath: /etc/kubernetes/pki, name: k8s-certs, readOnly: true}
    - {mountPath: /etc/kubernetes/controller-manager.conf, name: kubeconfig, readOnly: true}
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  volumes:
  - hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}
    name: k8s-certs
  - hostPath: {path: /etc/kubernetes/controller-manager.conf, type: FileOrCreate}
    name: kubeconfig
"""


def test_kubeadm_static_pod_parses_as_the_kubelet_would() -> None:
    sp = static.parse_manifest(Path("/m/kcm.yaml"), KUBEADM_KCM, "cp-1")
    pod = sp.spec
    assert pod.name == "kube-controller-manager-cp-1" and pod.namespace == "kube-system"
    assert pod.host_network and pod.node_name == "cp-1" and pod.uid == sp.uid
    (c,) = pod.containers
    assert c.liveness == Probe(
        kind="http",
        port="probe-port",
        path="/healthz",
        scheme="HTTPS",
        host="127.0.0.1",
        initial_delay=10,
        period=10,
        timeout=15,
        failure_threshold=8,
    )
    assert c.port_number("probe-port") == 10257
    assert sp.uid == static.config_hash(KUBEADM_KCM, "cp-1")
    assert sp.uid != static.config_hash(KUBEADM_KCM + b"\n", "cp-1")


def test_mirror_pod_is_annotated_and_owned_by_the_node() -> None:
    sp = static.parse_manifest(Path("/m/kcm.yaml"), KUBEADM_KCM, "cp-1")
    mirror = static.mirror_pod(sp, node_name="cp-1", node_uid="node-uid")
    meta = mirror["metadata"]
    assert meta["name"] == "kube-controller-manager-cp-1"
    assert meta["annotations"][MIRROR_ANNOTATION] == sp.uid
    assert meta["annotations"]["kubernetes.io/config.source"] == "file"
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "cp-1", "uid": "node-uid", "controller": True}
    ]
    assert mirror["spec"]["nodeName"] == "cp-1"
    assert static.is_mirror(mirror) and static.mirror_hash(mirror) == sp.uid


def test_scan_skips_hidden_and_other_files_and_reports_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "kcm.yaml").write_bytes(KUBEADM_KCM)
    (tmp_path / ".kcm.yaml.swp").write_bytes(KUBEADM_KCM)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("kind: Deployment\n")
    pods, errors = static.scan(tmp_path, "cp-1")
    assert [p.spec.name for p in pods] == ["kube-controller-manager-cp-1"]
    assert [e.path.name for e in errors] == ["bad.yaml"]
    assert static.scan(tmp_path / "missing", "cp-1") == ([], [])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tcpSocket": {"port": 80}}, Probe(kind="tcp", port=80)),
        (
            {"exec": {"command": ["true"]}, "periodSeconds": 2},
            Probe(kind="exec", command=("true",), period=2),
        ),
        ({"httpGet": {"port": "8080"}}, Probe(kind="http", port=8080)),
    ],
)
def test_probe_parsing(data: dict[str, Any], expected: Probe) -> None:
    assert parse_probe(data) == expected


@pytest.mark.parametrize(
    "data",
    [{"httpGet": {"port": 1, "scheme": "FTP"}}, {"exec": {}}, {"periodSeconds": 1}],
)
def test_bad_probes_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(PodSpecError):
        parse_probe(data)


def test_probe_tracker_thresholds() -> None:
    t = ProbeTracker(success_threshold=1, failure_threshold=3)
    assert [t.record(False), t.record(False), t.record(True)] == [None, None, True]
    assert [t.record(False), t.record(False), t.record(False)] == [None, None, False]
    assert t.record(False) is None  # no change


def test_http_probe_request_and_response() -> None:
    probe = Probe(kind="http", port=8080, path="healthz", headers=(("X-A", "b"),))
    raw = http_request(probe, "10.244.1.2", 8080)
    assert raw.startswith(b"GET /healthz HTTP/1.1\r\nHost: 10.244.1.2:8080\r\n")
    assert b"User-Agent: kube-probe/" in raw and b"X-A: b\r\n" in raw
    assert raw.endswith(b"Connection: close\r\n\r\n")
    assert parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\n") == 503
    with pytest.raises(ValueError):
        parse_status_line(b"garbage")


def pod_with(volumes_: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "nodeName": "w",
                "volumes": volumes_,
                "containers": [{"name": "c", "image": "busybox", "volumeMounts": mounts}],
            },
        }
    )


def test_mount_planning() -> None:
    pod = pod_with(
        [
            {"name": "h", "hostPath": {"path": "/etc/kubernetes/pki"}},
            {"name": "s", "secret": {"secretName": "x", "defaultMode": 0o400}},
            {"name": "e", "emptyDir": {}},
        ],
        [
            {"name": "h", "mountPath": "/pki"},
            {"name": "s", "mountPath": "/s"},
            {"name": "e", "mountPath": "/data/sub", "subPath": "a/b", "readOnly": True},
        ],
    )
    root = Path("/lab/nodes/w")
    mounts = volumes.plan_mounts(root, pod, pod.containers[0])
    assert [(m.source, m.target, m.read_only) for m in mounts] == [
        ("/lab/nodes/w/etc/kubernetes/pki", "/pki", False),
        ("/lab/nodes/w/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s", "/s", True),
        (
            "/lab/nodes/w/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/e/a/b",
            "/data/sub",
            True,
        ),
    ]
    assert pod.volumes[1].default_mode == 0o400


def test_host_path_cannot_climb_out_of_the_node_root() -> None:
    assert volumes.host_path(Path("/lab/n"), "/../../etc/shadow") == Path("/lab/n/etc/shadow")


def test_sub_path_escape_is_refused() -> None:
    pod = pod_with(
        [{"name": "e", "emptyDir": {}}], [{"name": "e", "mountPath": "/x", "subPath": "../up"}]
    )
    with pytest.raises(PodSpecError):
        volumes.plan_mounts(Path("/r"), pod, pod.containers[0])


def test_unsupported_volume_is_named() -> None:
    with pytest.raises(PodSpecError, match="persistentVolumeClaim"):
        pod_with([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}], [])


def test_downward_api_fields() -> None:
    pod = pod_with([], [])
    fields = volumes.PodFields(pod_ip="10.244.1.2", host_ip="172.29.0.12", labels=(("app", "x"),))
    assert volumes.field_value(pod, fields, "metadata.name") == "p"
    assert volumes.field_value(pod, fields, "status.podIP") == "10.244.1.2"
    assert volumes.field_value(pod, fields, "spec.nodeName") == "w"
    assert volumes.field_value(pod, fields, "metadata.labels['app']") == "x"
    with pytest.raises(PodSpecError):
        volumes.field_value(pod, fields, "spec.containers")


def test_select_items_and_modes() -> None:
    data = {"a": b"1", "b": b"2"}
    assert volumes.select_items(data, (), "s", 0o644) == [("a", b"1", 0o644), ("b", b"2", 0o644)]
    items = (
        parse_pod(
            {
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{"name": "c", "image": "i"}],
                    "volumes": [
                        {
                            "name": "v",
                            "configMap": {
                                "name": "m",
                                "items": [{"key": "b", "path": "x/y", "mode": 0o600}],
                            },
                        }
                    ],
                },
            }
        )
        .volumes[0]
        .items
    )
    assert volumes.select_items(data, items, "cm", 0o644) == [("x/y", b"2", 0o600)]
    with pytest.raises(volumes.VolumeError, match="no key"):
        volumes.select_items({}, items, "cm", 0o644)


IMG = images.Image(name="i", program="p", entrypoint=("/ep",), cmd=("default",))


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ((), (), ("/ep", "default")),
        ((), ("a",), ("/ep", "a")),
        (("run",), (), ("run",)),
        (("run",), ("$(X)", "$$(X)", "$(NOPE)"), ("run", "1", "$(X)", "$(NOPE)")),
    ],
)
def test_argv_follows_kubernetes_rules(
    command: tuple[str, ...], args: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    pod = parse_pod(
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "i", "command": list(command), "args": list(args)}
                ]
            },
        }
    )
    assert runtime.argv_for(pod.containers[0], IMG, {"X": "1"}) == expected


def test_base_env_points_in_cluster_clients_at_the_endpoint() -> None:
    pod = parse_pod(
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    env = runtime.base_env(pod, images.Image(name="i", program="busybox"), "p")
    assert env["HOSTNAME"] == "p"
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (
        "172.29.0.1",
        "6443",
    )
    assert "PATH" in env
