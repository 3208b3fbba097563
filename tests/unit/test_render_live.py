"""`render --from-cluster`: a live mirror pod back to its manifest, kubeadm's endpoint,
the kube reads against a faked transport, and the CLI around them."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from click.testing import CliRunner, Result

from kubehoist import kube, livepod
from kubehoist.cli import cli
from kubehoist.constants import SOURCE_SHA256_ANNOTATION
from kubehoist.errors import KubehoistError
from kubehoist.kube import controlplane
from kubehoist.manifest import load_static_pod
from kubehoist.render import Inputs, RenderOptions, render
from tests.unit.fakenode import ENDPOINT, NOW, FakeNode, Pki
from tests.unit.kubefake import write_kubeconfig

CORPUS = Path(__file__).parent / "corpus" / "kube-controller-manager"
KUBEADM = CORPUS / "kubeadm-v1.30.14.yaml"
KCM = "kube-controller-manager"
PODS = "/api/v1/namespaces/kube-system/pods"
CLUSTER_ENDPOINT = "https://kcp.example.internal:6443"


def mirror_pod(text: str | None = None, *, node: str = "cp-1") -> dict[str, Any]:
    """What the API server holds for a static pod: the manifest plus its additions."""
    doc = yaml.safe_load(text if text is not None else KUBEADM.read_text())
    pod: dict[str, Any] = copy.deepcopy(doc)
    pod["metadata"] = {
        "name": f"{doc['metadata']['name']}-{node}",
        "namespace": "kube-system",
        "labels": doc["metadata"]["labels"],
        "uid": "3ef3133b-6172-4ad8-b134-17a187fad7f6",
        "resourceVersion": "305",
        "generation": 1,
        "creationTimestamp": "2026-11-25T05:41:21Z",
        "annotations": {
            "kubernetes.io/config.hash": "efd77e93",
            "kubernetes.io/config.mirror": "efd77e93",
            "kubernetes.io/config.seen": "2026-11-25T05:41:21Z",
            "kubernetes.io/config.source": "file",
        },
        "ownerReferences": [
            {"apiVersion": "v1", "controller": True, "kind": "Node", "name": node, "uid": "n"}
        ],
        "managedFields": [{"manager": "kubelet", "operation": "Update"}],
    }
    spec = pod["spec"]
    spec.update(
        nodeName=node,
        dnsPolicy="ClusterFirst",
        enableServiceLinks=True,
        restartPolicy="Always",
        schedulerName="default-scheduler",
        terminationGracePeriodSeconds=30,
        preemptionPolicy="PreemptLowerPriority",
        priority=2000001000,
        tolerations=[
            {
                "effect": "NoExecute",
                "key": f"node.kubernetes.io/{key}",
                "operator": "Exists",
                "tolerationSeconds": 300,
            }
            for key in ("not-ready", "unreachable")
        ],
    )
    spec.setdefault("securityContext", {})
    for c in spec["containers"]:
        c.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
        for probe in ("livenessProbe", "startupProbe"):
            if probe in c:
                c[probe]["successThreshold"] = 1
    pod["status"] = {"phase": "Running", "podIP": "10.0.0.11"}
    return pod


# --- pure: the manifest back from the mirror pod -----------------------------------------


def test_mirror_pod_strips_back_to_the_manifest() -> None:
    original = yaml.safe_load(KUBEADM.read_text())
    original["metadata"].pop("creationTimestamp")
    original.pop("status")  # kubeadm writes `status: {}`
    original["spec"].pop("priority")  # admission's to set: dropped even when written
    assert livepod.manifest_from_mirror_pod(mirror_pod()) == original


def test_kept_what_the_manifest_says_even_where_it_equals_a_default() -> None:
    live = mirror_pod()
    live["metadata"]["annotations"]["example.com/team"] = "infra"
    live["spec"]["tolerations"].append({"operator": "Exists"})
    live["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
    manifest = livepod.manifest_from_mirror_pod(live)
    assert manifest["metadata"]["annotations"] == {"example.com/team": "infra"}
    assert manifest["metadata"]["name"] == KCM
    assert manifest["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert manifest["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "status" not in manifest and "nodeName" not in manifest["spec"]


def test_live_render_equals_the_file_render_but_for_the_source() -> None:
    options = RenderOptions(now=NOW, server=ENDPOINT, secret_name="kcm", secret_exists=True)
    from_file = render(load_static_pod(KUBEADM.read_text(), source=KUBEADM.name), options, Inputs())
    live = livepod.static_pod_from_mirror_pod(mirror_pod())
    assert live.source == "pod/kube-controller-manager-cp-1"
    assert live.sha256 == livepod.canonical_sha256(livepod.manifest_from_mirror_pod(mirror_pod()))
    from_live = render(live, options, Inputs())

    def without_source(objects: tuple[Any, ...]) -> list[Any]:
        out = copy.deepcopy(list(objects))
        for obj in out:
            obj["metadata"].get("annotations", {}).pop(SOURCE_SHA256_ANNOTATION, None)
        return out

    assert without_source(from_live.objects) == without_source(from_file.objects)
    deployment = from_live.objects[0]
    assert deployment["metadata"]["annotations"][SOURCE_SHA256_ANNOTATION] == live.sha256


@pytest.mark.parametrize(
    ("configured", "endpoint"),
    [
        ("controlPlaneEndpoint: cp.example:6443", "https://cp.example:6443"),
        ("controlPlaneEndpoint: cp.example", "https://cp.example:6443"),
        ("controlPlaneEndpoint: 10.0.0.5:8443", "https://10.0.0.5:8443"),
        ('controlPlaneEndpoint: "[fd00::5]:6443"', "https://[fd00::5]:6443"),
        ('controlPlaneEndpoint: "[fd00::5]"', "https://[fd00::5]:6443"),
        ('controlPlaneEndpoint: ""', None),
        ("kubernetesVersion: v1.30.0", None),
    ],
)
def test_control_plane_endpoint(configured: str, endpoint: str | None) -> None:
    assert livepod.control_plane_endpoint(configured, source="cm") == endpoint


@pytest.mark.parametrize(
    "configured", ["- a list", "controlPlaneEndpoint: cp:notaport", "controlPlaneEndpoint: 5", "{"]
)
def test_bad_cluster_configuration_is_one_line(configured: str) -> None:
    with pytest.raises(KubehoistError, match=r"^cm: "):
        livepod.control_plane_endpoint(configured, source="cm")


# --- the kube reads against a faked API server -------------------------------------------


def _status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
    return httpx2.Response(code, json={**body, "message": message})


class FakeControlPlane:
    """Nodes, pods by name and the kubeadm-config ConfigMap; records request paths."""

    def __init__(self) -> None:
        self.nodes: list[str] = ["cp-1", "cp-2"]
        self.pods: dict[str, dict[str, Any]] = {}
        self.cluster_configuration: str | None = f"controlPlaneEndpoint: {CLUSTER_ENDPOINT[8:]}"
        self.forbid: set[str] = set()
        self.paths: list[str] = []

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.paths.append(path)
        for resource in self.forbid:
            if f"/{resource}" in path:
                return _status(403, "Forbidden", f'{resource} is forbidden: User "jane" cannot')
        if path == "/api/v1/nodes":
            assert "node-role.kubernetes.io%2Fcontrol-plane" in str(request.url)
            items = [
                {"kind": "Node", "apiVersion": "v1", "metadata": {"name": n}} for n in self.nodes
            ]
            return httpx2.Response(
                200, json={"kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": items}
            )
        if path.startswith(PODS + "/"):
            name = path.rsplit("/", 1)[1]
            if name in self.pods:
                return httpx2.Response(200, json=self.pods[name])
            return _status(404, "NotFound", f'pods "{name}" not found')
        if path == "/api/v1/namespaces/kube-system/configmaps/kubeadm-config":
            if self.cluster_configuration is None:
                return _status(404, "NotFound", 'configmaps "kubeadm-config" not found')
            data = {"ClusterConfiguration": self.cluster_configuration}
            meta = {"name": "kubeadm-config", "namespace": "kube-system"}
            return httpx2.Response(
                200, json={"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta, "data": data}
            )
        return _status(404, "NotFound", "the server could not find the requested resource")

    def add(self, node: str, text: str | None = None) -> None:
        self.pods[f"{KCM}-{node}"] = mirror_pod(text, node=node)


@pytest.fixture
def fake() -> FakeControlPlane:
    return FakeControlPlane()


def read(
    fake: FakeControlPlane, tmp_path: Path, node: str | None = None
) -> controlplane.LiveStaticPod:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))
    client = kube.connect(where, transport=httpx2.MockTransport(fake.handler))
    return controlplane.read_static_pod(client, component=KCM, node=node, server=where.server)


def test_default_node_is_the_first_control_plane_that_runs_one(
    fake: FakeControlPlane, tmp_path: Path
) -> None:
    fake.nodes = ["cp-3", "cp-1", "cp-2"]
    fake.add("cp-2")
    fake.add("cp-3")
    live = read(fake, tmp_path)
    assert live.node == "cp-2" and live.warnings == ()
    assert live.pod.source == "pod/kube-controller-manager-cp-2"
    assert fake.paths == [
        "/api/v1/nodes",
        f"{PODS}/{KCM}-cp-1",
        f"{PODS}/{KCM}-cp-2",
        f"{PODS}/{KCM}-cp-3",
    ]


def test_nodes_that_disagree_are_warned_about(fake: FakeControlPlane, tmp_path: Path) -> None:
    fake.add("cp-1")
    fake.add("cp-2", KUBEADM.read_text().replace("--cluster-name=kubernetes", "--cluster-name=x"))
    live = read(fake, tmp_path)
    assert live.node == "cp-1"
    (warning,) = live.warnings
    assert "cp-2 differs from cp-1's (--cluster-name=x)" in warning
    assert "--node" in warning


def test_named_node_reads_one_pod(fake: FakeControlPlane, tmp_path: Path) -> None:
    fake.add("cp-1")
    fake.add("cp-2")
    assert read(fake, tmp_path, node="cp-2").node == "cp-2"
    assert fake.paths == [f"{PODS}/{KCM}-cp-2"]


@pytest.mark.parametrize(
    ("setup", "node", "message"),
    [
        (
            lambda f: None,
            "worker-1",
            "pod/kube-controller-manager-worker-1 not found in kube-system: node worker-1 runs "
            "no static kube-controller-manager",
        ),
        (
            lambda f: None,
            None,
            "no control-plane node runs a static kube-controller-manager (mirror pods "
            "kube-controller-manager-cp-1, kube-controller-manager-cp-2 not found",
        ),
        (
            lambda f: setattr(f, "nodes", []),
            None,
            "no node has the label node-role.kubernetes.io/control-plane; pass --node",
        ),
        (
            lambda f: f.forbid.add("nodes"),
            None,
            'forbidden: cannot list nodes (user "jane")',
        ),
        (
            lambda f: f.forbid.add("pods"),
            "cp-1",
            'forbidden: cannot get pods in namespace kube-system (user "jane")',
        ),
        (
            lambda f: (
                f.add("cp-1"),
                f.pods[f"{KCM}-cp-1"]["metadata"].pop("annotations"),
            ),
            "cp-1",
            "pod/kube-controller-manager-cp-1: not a mirror pod (no kubernetes.io/config.mirror",
        ),
        (
            lambda f: (
                f.add("cp-1"),
                f.pods[f"{KCM}-cp-1"]["spec"]["containers"][0].update(name="other", command=["x"]),
            ),
            "cp-1",
            "pod/kube-controller-manager-cp-1: spec.containers[0].name: 'other' is not",
        ),
    ],
)
def test_read_errors_are_one_line(
    fake: FakeControlPlane,
    tmp_path: Path,
    setup: Callable[[FakeControlPlane], object],
    node: str | None,
    message: str,
) -> None:
    setup(fake)
    with pytest.raises(KubehoistError) as info:
        read(fake, tmp_path, node=node)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_endpoint_from_kubeadm_config(fake: FakeControlPlane, tmp_path: Path) -> None:
    where = kube.target(kubeconfig=write_kubeconfig(tmp_path / "config"))
    client = kube.connect(where, transport=httpx2.MockTransport(fake.handler))
    endpoint, source, warnings = controlplane.read_control_plane_endpoint(
        client, server=where.server
    )
    assert endpoint == CLUSTER_ENDPOINT and warnings == ()
    assert source.endswith("kubeadm-config ClusterConfiguration.controlPlaneEndpoint")
    fake.cluster_configuration = None
    endpoint, _, warnings = controlplane.read_control_plane_endpoint(client, server=where.server)
    assert endpoint is None
    assert 'configmaps "kubeadm-config" not found' in warnings[0]
    fake.cluster_configuration = "apiServer: {}"
    endpoint, _, warnings = controlplane.read_control_plane_endpoint(client, server=where.server)
    assert endpoint is None and "sets no controlPlaneEndpoint" in warnings[0]


# --- the CLI -----------------------------------------------------------------------------


@pytest.fixture
def cli_fake(
    fake: FakeControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeControlPlane, Path]:
    transport = httpx2.MockTransport(fake.handler)
    monkeypatch.setattr(kube.client, "tls_transport", lambda config: transport)
    fake.add("cp-1")
    return fake, write_kubeconfig(tmp_path / "config")


def run_cli(kubeconfig: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["render", "--from-cluster", "--kubeconfig", str(kubeconfig), *args]
    )


def test_cli_renders_the_live_pod_with_the_cluster_endpoint(
    cli_fake: tuple[FakeControlPlane, Path], tmp_path: Path
) -> None:
    fake, kubeconfig = cli_fake
    node = FakeNode(tmp_path / "node", Pki())
    pod = load_static_pod(KUBEADM.read_text(), source=KUBEADM.name)
    node.populate(pod, RenderOptions(now=datetime.now(UTC)))
    result = run_cli(kubeconfig, "--host-root", str(node.root))
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Secret", "Deployment", "PodDisruptionBudget"]
    conf = yaml.safe_load(base64.b64decode(docs[0]["data"]["controller-manager.conf"]))
    assert conf["clusters"][0]["cluster"]["server"] == CLUSTER_ENDPOINT  # not admin.conf's
    assert "kubeadm-config ClusterConfiguration.controlPlaneEndpoint" in result.stderr
    assert "pod/kube-controller-manager-cp-1" in result.stderr
    assert "Traceback" not in result.output
    assert fake.paths == [
        "/api/v1/nodes",
        f"{PODS}/{KCM}-cp-1",
        f"{PODS}/{KCM}-cp-2",
        "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
    ]


def test_cli_with_a_secret_name_reads_only_the_pod(
    cli_fake: tuple[FakeControlPlane, Path], tmp_path: Path
) -> None:
    fake, kubeconfig = cli_fake
    result = run_cli(kubeconfig, "--secret-name", "kcm-creds", "--node", "cp-1", "-o", "json")
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)["items"]
    assert [o["kind"] for o in objects] == ["Deployment", "PodDisruptionBudget"]
    assert fake.paths == [f"{PODS}/{KCM}-cp-1"]


def test_cli_with_server_reads_no_config_map(
    cli_fake: tuple[FakeControlPlane, Path], tmp_path: Path
) -> None:
    fake, kubeconfig = cli_fake
    node = FakeNode(tmp_path / "node", Pki())
    pod = load_static_pod(KUBEADM.read_text(), source=KUBEADM.name)
    node.populate(pod, RenderOptions(now=datetime.now(UTC)))
    server = "https://lb.example:443"
    result = run_cli(
        kubeconfig, "--host-root", str(node.root), "--node", "cp-1", "--server", server
    )
    assert result.exit_code == 0, result.output
    conf = yaml.safe_load(
        base64.b64decode(next(yaml.safe_load_all(result.stdout))["data"]["controller-manager.conf"])
    )
    assert conf["clusters"][0]["cluster"]["server"] == server
    assert fake.paths == [f"{PODS}/{KCM}-cp-1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--node", "cp-1"),
            "error: --from-cluster: the credentials' files cannot be read through the API; "
            "pass --host-root DIR",
        ),
        (("--node", "cp-9", "--secret-name", "s"), "error: pod/kube-controller-manager-cp-9 not"),
        (("--component", "etcd", "--secret-name", "s"), "error: unknown component 'etcd'"),
        (("--context", "nope", "--secret-name", "s"), 'error: context "nope" does not exist'),
    ],
)
def test_cli_errors_are_one_line(
    cli_fake: tuple[FakeControlPlane, Path], args: tuple[str, ...], message: str
) -> None:
    _, kubeconfig = cli_fake
    result = run_cli(kubeconfig, *args)
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(message), result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flag", [("--node", "cp-1"), ("--kubeconfig", "k"), ("--context", "c")])
def test_cluster_flags_need_from_cluster(flag: tuple[str, str]) -> None:
    result = CliRunner().invoke(cli, ["render", "-f", str(KUBEADM), *flag])
    assert result.exit_code != 0
    assert result.stderr.splitlines()[-1] == f"error: {flag[0]} needs --from-cluster"
