"""The guard's static pod, its minimal RBAC, and the `kubehoist guard` commands."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from kubehoist.cli.guard import guard
from kubehoist.components import KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER
from kubehoist.guard import manifest


def test_static_pod_runs_the_guard_on_the_host_network_writing_only_its_files() -> None:
    pod = manifest.static_pod(KUBE_CONTROLLER_MANAGER, image="kubehoist:dev", grace_s=25)
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    (c,) = spec["containers"]
    assert c["image"] == "kubehoist:dev"
    assert c["command"] == ["kubehoist"]
    assert c["args"][:2] == ["guard", "run"]
    assert "--component=kube-controller-manager" in c["args"]
    assert "--manifests-dir=/etc/kubernetes/manifests" in c["args"]
    assert "--kubeconfig=/etc/kubernetes/kubehoist/guard.conf" in c["args"]
    assert "--grace=25" in c["args"]
    paths = sorted(v["hostPath"]["path"] for v in spec["volumes"])
    assert paths == ["/", "/etc/kubernetes/kubehoist", "/etc/kubernetes/manifests"]
    # It may write only the manifests and its own files; the node's `/` (for crictl) is
    # read-only.
    by_name = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    writable = sorted(by_name[m["name"]] for m in c["volumeMounts"] if not m.get("readOnly"))
    assert writable == ["/etc/kubernetes/kubehoist", "/etc/kubernetes/manifests"]
    # Never selected as a candidate of the component.
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] != "kube-controller-manager"
    assert labels["component"] != "kube-controller-manager"


def test_rbac_is_minimal() -> None:
    role, binding = manifest.rbac(KUBE_SCHEDULER)
    updates = [r for r in role["rules"] if "update" in r["verbs"]]
    assert updates == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kube-scheduler", "kubehoist-guard-kube-scheduler"],
            "verbs": ["update"],
        }
    ]
    for rule in role["rules"]:
        assert not {"delete", "patch", "*"} & set(rule["verbs"])
        if rule["resources"] in (["pods"], ["deployments"]):
            assert rule["verbs"] == ["get", "list", "watch"]
    assert binding["subjects"][0]["name"] == manifest.GUARD_GROUP
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_install_print_and_on_a_node(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(guard, ["install", "--print"])
    assert out.exit_code == 0, out.output
    kinds = [d["kind"] for d in yaml.safe_load_all(out.output)]
    assert kinds == ["Pod", "Role", "RoleBinding"]
    out = runner.invoke(guard, ["install", "--manifests-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    written = tmp_path / "kubehoist-guard-kube-controller-manager.yaml"
    assert yaml.safe_load(written.read_text())["kind"] == "Pod"
    out = runner.invoke(guard, ["uninstall", "--manifests-dir", str(tmp_path)])
    assert out.exit_code == 0 and not written.exists()


def test_run_refuses_a_grace_shorter_than_a_lease(tmp_path: Path) -> None:
    out = CliRunner().invoke(guard, ["run", "--grace", "5", "--manifests-dir", str(tmp_path)])
    assert out.exit_code != 0
    assert "shorter than the lease duration" in str(out.exception or out.output)
