"""`kubehoist render` end to end through the CLI: output, and every bad input of the issue.

Each bad input gives exit code != 0 and exactly one stderr line, `error: ...`, naming the
file and the field; never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from kubehoist.cli import cli
from kubehoist.manifest import load_static_pod
from kubehoist.render import RenderOptions
from tests.unit.fakenode import ENDPOINT, FakeNode, Pki

CORPUS = Path(__file__).parent / "corpus" / "kube-controller-manager"
KUBEADM = CORPUS / "kubeadm-v1.30.14.yaml"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> FakeNode:
    root = tmp_path / "node"
    fake = FakeNode(root, pki)
    pod = load_static_pod(KUBEADM.read_text(), source=KUBEADM.name)
    fake.populate(pod, RenderOptions(now=datetime.now(UTC)))
    return fake


def run(node: FakeNode, manifest: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["render", "-f", str(manifest), "--host-root", str(node.root), *args]
    )


def manifest_from(tmp_path: Path, text: str, name: str = "kube-controller-manager.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def kubeadm_with(tmp_path: Path, edit: Callable[[str], str]) -> Path:
    return manifest_from(tmp_path, edit(KUBEADM.read_text()))


def assert_one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == lines[-1]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_renders_yaml_to_stdout_and_warnings_to_stderr(node: FakeNode) -> None:
    result = run(node, KUBEADM)
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Secret", "Deployment", "PodDisruptionBudget"]
    assert result.stdout.startswith("---\n")
    assert "warning: " in result.stderr
    assert ENDPOINT in result.stderr  # which endpoint the pods use is always said
    assert "warning" not in result.stdout


def test_renders_json_list(node: FakeNode) -> None:
    result = run(node, KUBEADM, "-o", "json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["kind"] == "List"
    assert [i["kind"] for i in listing["items"]] == ["Secret", "Deployment", "PodDisruptionBudget"]


def test_same_input_same_bytes(node: FakeNode) -> None:
    assert run(node, KUBEADM).stdout == run(node, KUBEADM).stdout


def test_options_shape_the_deployment(node: FakeNode) -> None:
    result = run(
        node,
        KUBEADM,
        "--replicas", "3",
        "--port", "10400",
        "--image", "registry.example/kcm:v1.30.14",
        "--node-selector", "node-role.kubernetes.io/control-plane=",
        "--spread", "zone",
        "--server", "https://api.example:6443",
        "--lease-duration", "30s",
        "--renew-deadline", "20s",
        "--retry-period", "4s",
        "--set-flag", "--v=4",
        "--set-flag=--cluster-name=prod",
        "--drop-flag", "--allocate-node-cidrs",
        "--secret-name", "kcm-creds",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "PodDisruptionBudget"]
    deployment = docs[0]
    spec = deployment["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert deployment["spec"]["replicas"] == 3
    assert spec["containers"][0]["image"] == "registry.example/kcm:v1.30.14"
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["volumes"][0]["secret"]["secretName"] == "kcm-creds"
    assert "--cluster-name=prod" in command and "--cluster-name=kubernetes" not in command
    assert "--allocate-node-cidrs=true" not in command
    # Flags that were not there are appended in a stable order: the user's, then render's.
    # (--bind-address was there: it changes in place.)
    assert command[-5:] == [
        "--v=4",
        "--leader-elect-lease-duration=30s",
        "--leader-elect-renew-deadline=20s",
        "--leader-elect-retry-period=4s",
        "--secure-port=10400",
    ]
    assert command[3] == "--bind-address=0.0.0.0"  # [1] was --allocate-node-cidrs
    assert "--secure-port=10400" in command
    assert spec["containers"][0]["livenessProbe"]["httpGet"]["port"] == 10400
    assert "kcm-creds is used as it is" in result.stderr


def test_output_dir_writes_one_file_per_object(node: FakeNode, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(node, KUBEADM, "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "00-secret-kube-controller-manager-credentials.yaml",
        "01-deployment-kube-controller-manager.yaml",
        "02-poddisruptionbudget-kube-controller-manager.yaml",
    ]
    assert (out / names[0]).stat().st_mode & 0o777 == 0o600


def test_image_mode_writes_build_context_with_a_loud_warning(
    node: FakeNode, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(
        node, KUBEADM, "--credentials", "image", "--image", "reg.example/kcm:baked",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: IMAGE MODE:" in result.stderr.splitlines()[0]
    dockerfile = (out / "image" / "Dockerfile").read_text()
    assert "FROM registry.k8s.io/kube-controller-manager:v1.30.14\n" in dockerfile
    assert "COPY --chown=65532:65532 credentials/ /etc/kubehoist/credentials/" in dockerfile
    assert "WARNING" in dockerfile
    files = sorted(p.name for p in (out / "image" / "credentials").iterdir())
    assert files == ["ca.crt", "ca.key", "controller-manager.conf", "front-proxy-ca.crt", "sa.key"]
    kinds = sorted(p.name.split("-", 2)[1] for p in out.glob("0*.yaml"))
    assert kinds == ["deployment", "poddisruptionbudget"]  # no Secret in image mode
    deployment = yaml.safe_load((out / "00-deployment-kube-controller-manager.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "reg.example/kcm:baked"
    assert not any("secret" in v for v in spec.get("volumes", []))


def test_image_mode_needs_output_dir_and_image(node: FakeNode, tmp_path: Path) -> None:
    assert_one_line_error(run(node, KUBEADM, "--credentials", "image"), "--output-dir")
    result = run(node, KUBEADM, "--credentials", "image", "--output-dir", str(tmp_path / "o"))
    assert_one_line_error(result, "--image")


# ----------------------------------------------------------------- bad input


def test_not_yaml(node: FakeNode, tmp_path: Path) -> None:
    path = manifest_from(tmp_path, "apiVersion: v1\nkind: Pod\nspec: [unclosed\n")
    assert_one_line_error(run(node, path), "kube-controller-manager.yaml: not YAML", "line")


def test_not_a_pod(node: FakeNode, tmp_path: Path) -> None:
    path = kubeadm_with(tmp_path, lambda t: t.replace("kind: Pod", "kind: Deployment"))
    assert_one_line_error(run(node, path), "kube-controller-manager.yaml: kind: expected Pod")


def test_not_a_mapping(node: FakeNode, tmp_path: Path) -> None:
    path = manifest_from(tmp_path, "- just\n- a list\n")
    assert_one_line_error(run(node, path), "kube-controller-manager.yaml: expected a Pod")


def test_several_documents(node: FakeNode, tmp_path: Path) -> None:
    text = KUBEADM.read_text()
    path = manifest_from(tmp_path, text + "---\n" + text)
    assert_one_line_error(run(node, path), "kube-controller-manager.yaml: 2 YAML documents")


def test_no_container(node: FakeNode, tmp_path: Path) -> None:
    path = manifest_from(
        tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: []\n"
    )
    assert_one_line_error(
        run(node, path), "kube-controller-manager.yaml: spec.containers: no container"
    )


def test_container_is_not_the_component(node: FakeNode, tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: etcd}\nspec:\n  containers:\n"
        "  - name: etcd\n    image: registry.k8s.io/etcd:3.5.12-0\n"
        "    command: [etcd, --data-dir=/var/lib/etcd]\n"
    )
    path = manifest_from(tmp_path, text, name="etcd.yaml")
    assert_one_line_error(
        run(node, path), "etcd.yaml: spec.containers[0].name: 'etcd' is not kube-controller-manager"
    )


def test_shell_command_is_refused(node: FakeNode, tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: kcm}\nspec:\n  containers:\n"
        "  - name: kube-controller-manager\n"
        "    image: registry.k8s.io/kube-controller-manager:v1.30.0\n"
        "    command: [/bin/sh, -c, 'exec kube-controller-manager --leader-elect=true']\n"
    )
    assert_one_line_error(
        run(node, manifest_from(tmp_path, text)), "spec.containers[0].command: runs a shell"
    )


def test_leader_elect_false_is_refused_and_force_overrides(node: FakeNode, tmp_path: Path) -> None:
    path = kubeadm_with(
        tmp_path, lambda t: t.replace("--leader-elect=true", "--leader-elect=false")
    )
    error = assert_one_line_error(
        run(node, path),
        "kube-controller-manager.yaml: spec.containers[0].command[12]: --leader-elect=false",
        "--force",
    )
    assert "refusing" in error
    forced = run(node, path, "--force")
    assert forced.exit_code == 0, forced.output
    assert "runs without leader election" in forced.stderr
    assert "--leader-elect=true" in forced.stdout


def test_referenced_file_missing(node: FakeNode, tmp_path: Path) -> None:
    (node.root / "etc/kubernetes/pki/sa.key").unlink()
    assert_one_line_error(
        run(node, KUBEADM),
        "kubeadm-v1.30.14.yaml: spec.containers[0].command[15]",
        "--service-account-private-key-file /etc/kubernetes/pki/sa.key",
        "no such file",
    )


def test_referenced_file_unreadable(node: FakeNode, tmp_path: Path) -> None:
    target = node.root / "etc/kubernetes/pki/front-proxy-ca.crt"
    target.unlink()
    target.mkdir()
    assert_one_line_error(run(node, KUBEADM), "--requestheader-client-ca-file", "is a directory")


def test_malformed_kubeconfig(node: FakeNode, tmp_path: Path) -> None:
    node.write(
        "/etc/kubernetes/controller-manager.conf", b"apiVersion: v1\nkind: Config\nclusters: []\n"
    )
    assert_one_line_error(
        run(node, KUBEADM), "/etc/kubernetes/controller-manager.conf: clusters: no cluster"
    )
    node.write("/etc/kubernetes/controller-manager.conf", b"clusters: {unclosed\n")
    assert_one_line_error(run(node, KUBEADM), "/etc/kubernetes/controller-manager.conf: not YAML")
    doc = yaml.safe_load(node.pki.kubeconfig())
    doc["users"][0]["user"]["client-certificate-data"] = "not base64!"
    node.write("/etc/kubernetes/controller-manager.conf", yaml.safe_dump(doc).encode())
    assert_one_line_error(
        run(node, KUBEADM),
        "/etc/kubernetes/controller-manager.conf: users[0].user.client-certificate-data",
        "base64",
    )


def test_certificate_does_not_parse(node: FakeNode, tmp_path: Path) -> None:
    node.write(
        "/etc/kubernetes/pki/ca.crt",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    assert_one_line_error(run(node, KUBEADM), "/etc/kubernetes/pki/ca.crt (--", "does not parse")
    node.write("/etc/kubernetes/pki/ca.crt", b"hello\n")
    assert_one_line_error(run(node, KUBEADM), "/etc/kubernetes/pki/ca.crt", "not a PEM certificate")


def test_private_key_does_not_parse(node: FakeNode) -> None:
    node.write(
        "/etc/kubernetes/pki/sa.key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    assert_one_line_error(
        run(node, KUBEADM),
        "/etc/kubernetes/pki/sa.key (--service-account-private-key-file)",
        "not a PEM private key",
    )


def test_expired_certificate_is_an_error(node: FakeNode) -> None:
    now = datetime.now(UTC)
    node.write(
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        node.pki.cert_pem("front-proxy-ca", not_after=now - timedelta(days=2)),
    )
    assert_one_line_error(
        run(node, KUBEADM),
        "/etc/kubernetes/pki/front-proxy-ca.crt (--requestheader-client-ca-file)",
        "CN=front-proxy-ca expired on",
    )


def test_certificate_expiring_soon_is_a_warning(node: FakeNode) -> None:
    now = datetime.now(UTC)
    node.write(
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        node.pki.cert_pem("front-proxy-ca", not_after=now + timedelta(days=10, hours=1)),
    )
    result = run(node, KUBEADM)
    assert result.exit_code == 0, result.output
    assert "CN=front-proxy-ca expires in 10 days" in result.stderr


def test_port_collides_with_static_pod_on_host_network(node: FakeNode) -> None:
    assert_one_line_error(
        run(node, KUBEADM, "--host-network", "--port", "10257"),
        "--port 10257: collides with the static pod's --secure-port=10257",
    )
    ok = run(node, KUBEADM, "--host-network")
    assert ok.exit_code == 0, ok.output


def test_conflicting_set_and_drop(node: FakeNode) -> None:
    result = run(node, KUBEADM, "--set-flag", "--v=4", "--drop-flag", "--v")
    assert result.exit_code == 2
    assert_one_line_error(result, "--drop-flag --v: conflicts with --set-flag --v=4")
    result = run(node, KUBEADM, "--set-flag", "--v=4", "--set-flag", "--v=5")
    assert_one_line_error(result, "--set-flag --v=5: conflicts with --set-flag --v=4")
    result = run(node, KUBEADM, "--set-flag", "--secure-port=1")
    assert_one_line_error(result, "render owns --secure-port", "--port")
    result = run(
        node, KUBEADM, "--lease-duration", "20s", "--set-flag", "--leader-elect-lease-duration=30s"
    )
    assert_one_line_error(result, "--lease-duration 20s: conflicts with --set-flag")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--renew-deadline", "15s"], "lease duration 15s must be greater than renew deadline 15s"),
        (["--retry-period", "9s"], "renew deadline 10s must be greater than 1.2 x retry period 9s"),
        (["--lease-duration", "soon"], "not a duration"),
        (["--retry-period", "0s"], "must be greater than zero"),
    ],
)
def test_leader_election_tuning_is_validated(node: FakeNode, args: list[str], needle: str) -> None:
    result = run(node, KUBEADM, *args)
    assert result.exit_code == 2
    assert_one_line_error(result, needle)


def test_leader_election_tuning_in_the_manifest_is_validated(
    node: FakeNode, tmp_path: Path
) -> None:
    path = kubeadm_with(
        tmp_path,
        lambda t: t.replace(
            "    - --leader-elect=true\n",
            "    - --leader-elect=true\n    - --leader-elect-renew-deadline=20s\n",
        ),
    )
    assert_one_line_error(
        run(node, path),
        "kube-controller-manager.yaml: spec.containers[0].command[13]",
        "must be greater than renew deadline 20s",
    )


def test_from_cluster_is_a_clean_error(node: FakeNode) -> None:
    result = CliRunner().invoke(cli, ["render", "--from-cluster"])
    assert_one_line_error(result, "--from-cluster")


def test_missing_manifest_file(node: FakeNode, tmp_path: Path) -> None:
    assert_one_line_error(run(node, tmp_path / "nope.yaml"), "nope.yaml")


def test_loopback_server_without_endpoint_is_refused(node: FakeNode) -> None:
    (node.root / "etc/kubernetes/admin.conf").unlink()
    node.write(
        "/etc/kubernetes/controller-manager.conf",
        node.pki.kubeconfig(server="https://127.0.0.1:6443"),
    )
    assert_one_line_error(
        run(node, KUBEADM),
        "/etc/kubernetes/controller-manager.conf: clusters[0].cluster.server",
        "--server",
    )
    ok = run(node, KUBEADM, "--server", "https://lb.example:6443")
    assert ok.exit_code == 0, ok.output
    assert "https://127.0.0.1:6443 -> https://lb.example:6443 (--server)" in ok.stderr
