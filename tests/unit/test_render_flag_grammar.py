"""`render` reads the flags as the component's parser (spf13/pflag) reads them.

A boolean flag followed by a word (`--leader-elect false`) leaves a stray argument the
component refuses, so render refuses it too, in one line naming the flag and the word;
a value flag followed by its value (`--kubeconfig /etc/...`) is an ordinary flag whose
file is carried and whose value is remapped in place, both tokens kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from kubehoist.manifest import load_static_pod
from kubehoist.render import RenderOptions
from tests.unit.fakenode import FakeNode, Pki
from tests.unit.test_render_cli import KUBEADM, assert_one_line_error, kubeadm_with, run


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> FakeNode:
    fake = FakeNode(tmp_path / "node", pki)
    pod = load_static_pod(KUBEADM.read_text(), source=KUBEADM.name)
    fake.populate(pod, RenderOptions(now=datetime.now(UTC)))
    return fake


@pytest.mark.parametrize(
    ("before", "after", "needle"),
    [
        (
            "    - --leader-elect=true\n",
            "    - --leader-elect\n    - 'false'\n",
            "spec.containers[0].command[12]: --leader-elect false: "
            "--leader-elect is a boolean flag",
        ),
        (
            "    - --use-service-account-credentials=true\n",
            "    - --use-service-account-credentials\n    - 'true'\n",
            "spec.containers[0].command[17]: --use-service-account-credentials true: "
            "--use-service-account-credentials is a boolean flag",
        ),
        (
            "    - --use-service-account-credentials=true\n",
            "    - --use-service-account-credentials=true\n    - restart\n",
            "spec.containers[0].command[18]: 'restart' is a stray argument",
        ),
    ],
)
def test_a_word_the_component_would_refuse_is_refused(
    node: FakeNode, tmp_path: Path, before: str, after: str, needle: str
) -> None:
    path = kubeadm_with(tmp_path, lambda t: t.replace(before, after))
    error = assert_one_line_error(run(node, path), f"kube-controller-manager.yaml: {needle}")
    assert "refuses to start" in error


def test_a_value_flag_with_its_value_as_the_next_word(node: FakeNode, tmp_path: Path) -> None:
    path = kubeadm_with(
        tmp_path,
        lambda t: t.replace(
            "    - --kubeconfig=/etc/kubernetes/controller-manager.conf\n",
            "    - --kubeconfig\n    - /etc/kubernetes/controller-manager.conf\n",
        ).replace(
            "    - --root-ca-file=/etc/kubernetes/pki/ca.crt\n",
            "    - --root-ca-file\n    - /etc/kubernetes/pki/ca.crt\n    - -v\n    - '2'\n",
        ),
    )
    result = run(node, path)
    assert result.exit_code == 0, result.output
    deployment = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    at = command.index("--kubeconfig")
    assert command[at + 1] == "/etc/kubehoist/credentials/controller-manager.conf"
    at = command.index("--root-ca-file")
    assert command[at + 1 : at + 4] == ["/etc/kubehoist/credentials/ca.crt", "-v", "2"]


def test_set_flag_gives_a_value_flag_a_value(node: FakeNode) -> None:
    assert_one_line_error(
        run(node, KUBEADM, "--set-flag", "--kube-api-qps"),
        "--set-flag --kube-api-qps: --kube-api-qps takes a value (--name=VALUE)",
    )
    result = run(node, KUBEADM, "--set-flag", "--profiling")
    assert result.exit_code == 0, result.output
    assert "- --profiling\n" in result.stdout
