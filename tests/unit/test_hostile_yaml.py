"""Hostile or broken YAML: one line naming the file (and the field), bounded time and memory.

Each input is small to write down and would, unbounded, blow the Python stack, expand
to billions of nodes, or be read without end. pytest-timeout stops a test that hangs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kubehoist.cli import cli
from kubehoist.errors import KubehoistError
from kubehoist.manifest import load_static_pod
from kubehoist.render import kubeconfig
from kubehoist.safeyaml import MAX_BYTES, MAX_DEPTH, load_all, load_document

pytestmark = pytest.mark.timeout(30)

KCM = Path(__file__).parent / "corpus" / "kube-controller-manager" / "kubeadm-v1.30.14.yaml"

LAUGHS = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    + ["apiVersion: v1", "kind: Pod"]
)
"""10^10 "lol"s once expanded, in under a kilobyte."""


def pod(container: str, volumes: str = "") -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: kcm, namespace: kube-system}\nspec:\n"
        "  containers:\n  - name: kube-controller-manager\n    image: i\n"
        "    command: [kube-controller-manager, --kubeconfig=/etc/kubernetes/c.conf]\n"
        + container
        + volumes
    )


HOSTILE = [
    pytest.param("[" * 5000 + "]" * 5000, "nested more than 64 levels", id="deep-flow"),
    pytest.param(
        "".join(f"{' ' * i}k{i}:\n" for i in range(2000)) + " " * 2000 + "x: 1\n",
        "nested more than 64 levels",
        id="deep-block",
    ),
    pytest.param(LAUGHS, "nodes once aliases are expanded", id="billion-laughs"),
    pytest.param(
        "a: &a [x]\n"
        + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(80)),
        "levels deep once aliases are expanded",
        id="deep-through-aliases",
    ),
    pytest.param("a: &a [*a]\n", "an alias refers to a node that contains it", id="recursive"),
    pytest.param(
        "apiVersion: v1\nkind: Pod\nkind: Deployment\n",
        "duplicate key 'kind' (line 3)",
        id="dup-top",
    ),
    pytest.param(
        pod("    image: j\n"), "spec.containers[0]: duplicate key 'image' (line 9)", id="dup-field"
    ),
    pytest.param("a: [unclosed\n", "not YAML", id="not-yaml"),
    pytest.param("kind: Pod\n---\nkind: Pod\n", "2 YAML documents", id="two-documents"),
    pytest.param("- a\n- list\n", "expected a Pod (a mapping), got a list", id="top-level-list"),
    pytest.param("just a string\n", "expected a Pod (a mapping), got a string", id="top-scalar"),
    pytest.param("apiVersion: v1\nkind: Service\n", "kind: expected Pod", id="wrong-kind"),
    pytest.param("apiVersion: apps/v1\nkind: Pod\n", "apiVersion: expected v1", id="wrong-api"),
    pytest.param(
        pod(
            "    volumeMounts: [{name: k8s, mountPath: etc/kubernetes}]\n",
            "  volumes: [{name: k8s, hostPath: {path: /etc/kubernetes}}]\n",
        ),
        "spec.containers[0].volumeMounts[0].mountPath: 'etc/kubernetes' is not an absolute path",
        id="relative-mount-path",
    ),
    pytest.param(
        pod("    volumeMounts: [{name: pki, mountPath: /etc/kubernetes/pki}]\n"),
        "spec.containers[0].volumeMounts[0].name: 'pki' names no volume in spec.volumes",
        id="mount-names-no-volume",
    ),
    pytest.param(
        pod(
            "    volumeMounts: [{name: k8s, mountPath: /etc/kubernetes, subPath: ../../etc}]\n",
            "  volumes: [{name: k8s, hostPath: {path: /etc/kubernetes}}]\n",
        ),
        "volumeMounts[0].subPath: '../../etc': expected a relative path",
        id="sub-path-escapes",
    ),
    pytest.param(
        pod(
            "",
            "  volumes: [{name: k8s, hostPath: {path: /a}}, {name: k8s, hostPath: {path: /b}}]\n",
        ),
        "spec.volumes[1].name: 'k8s': a second volume of that name",
        id="duplicate-volume",
    ),
]


@pytest.mark.parametrize(("text", "needle"), HOSTILE)
def test_hostile_manifest_is_one_line_error(text: str, needle: str) -> None:
    with pytest.raises(KubehoistError) as info:
        load_static_pod(text, source="kcm.yaml")
    message = info.value.message
    assert message.startswith("kcm.yaml: "), message
    assert needle in message, message
    assert "\n" not in message


def run(path: Path, tmp_path: Path) -> Result:
    return CliRunner().invoke(cli, ["render", "-f", str(path), "--host-root", str(tmp_path)])


@pytest.mark.parametrize(("text", "needle"), HOSTILE[:5])
def test_hostile_manifest_through_the_cli(text: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "kcm.yaml"
    path.write_text(text)
    result = run(path, tmp_path)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: refused: "), line
    assert needle in line


def test_a_manifest_over_the_size_limit_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "kcm.yaml"
    path.write_text(KCM.read_text() + "#" * (MAX_BYTES + 1) + "\n")
    result = run(path, tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"error: {path}: more than {MAX_BYTES} bytes, the most render reads\n"
    with pytest.raises(KubehoistError, match="more than the 4194304 render reads"):
        load_all("#" * (MAX_BYTES + 1), source="x.yaml")


def test_a_device_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    zero = Path("/dev/zero")
    if not zero.exists():
        pytest.skip("no /dev/zero")
    result = run(zero, tmp_path)
    assert result.exit_code == 1
    assert "more than 4194304 bytes" in result.stderr


def test_limits_leave_ordinary_documents_alone() -> None:
    nested = "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert load_document(nested, source="a.yaml", what="thing") is not None
    shared = "a: &a {k: v}\nb: *a\nc: {<<: *a, k: w}\n"
    assert load_document(shared, source="a.yaml") == {
        "a": {"k": "v"},
        "b": {"k": "v"},
        "c": {"k": "w"},
    }
    assert load_all("---\n---\nkind: Pod\n", source="a.yaml") == [{"kind": "Pod"}]


def test_a_hostile_kubeconfig_names_the_kubeconfig() -> None:
    with pytest.raises(KubehoistError) as info:
        kubeconfig.load(LAUGHS.encode(), name="/etc/kubernetes/controller-manager.conf")
    assert info.value.message.startswith("/etc/kubernetes/controller-manager.conf: refused: ")
