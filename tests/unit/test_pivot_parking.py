"""Parking manifests (locally and through the helper script), results, state, policy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from kubehoist.errors import KubehoistError
from kubehoist.pivot import parking
from kubehoist.pivot.phases import _check_image_policy
from kubehoist.pivot.state import PivotState

MANIFEST = b"apiVersion: v1\nkind: Pod\n# a comment kept byte for byte \xe2\x9c\x93\n"


def _node(tmp_path: Path) -> Path:
    etc = tmp_path / "etc/kubernetes"
    (etc / "manifests").mkdir(parents=True)
    f = etc / "manifests/kube-controller-manager.yaml"
    f.write_bytes(MANIFEST)
    os.chmod(f, 0o600)
    os.utime(f, (1_600_000_000, 1_600_000_000))
    return etc


def test_local_park_and_unpark_round_trip(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    files = parking.LocalNodeFiles(etc / "manifests")
    src = etc / "manifests/kube-controller-manager.yaml"
    before = (src.read_bytes(), src.stat().st_mode, src.stat().st_mtime_ns)
    r = files.park("cp-1", "kube-controller-manager.yaml")
    assert r.state == "parked" and r.sha256 == hashlib.sha256(MANIFEST).hexdigest()
    assert not src.exists()
    parked = etc / "kubehoist/parked/kube-controller-manager.yaml"
    assert parked.read_bytes() == MANIFEST
    record = json.loads(
        (etc / "kubehoist/parked/kube-controller-manager.yaml.kubehoist.json").read_text()
    )
    assert record["sha256"] == r.sha256 and record["from"].endswith(
        "manifests/kube-controller-manager.yaml"
    )
    assert files.park("cp-1", "kube-controller-manager.yaml").state == "already-parked"
    assert files.parked("cp-1", "kube-controller-manager.yaml") == r.sha256

    u = files.unpark("cp-1", "kube-controller-manager.yaml")
    assert u.state == "unparked"
    assert (src.read_bytes(), src.stat().st_mode, src.stat().st_mtime_ns) == before
    assert not parked.exists()
    assert files.unpark("cp-1", "kube-controller-manager.yaml").state == "already-in-place"
    assert list((etc / "manifests").iterdir()) == [src]  # no temporary file left


def test_local_unpark_refuses_a_changed_copy(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    files = parking.LocalNodeFiles(etc / "manifests")
    files.park("cp-1", "kube-controller-manager.yaml")
    (etc / "kubehoist/parked/kube-controller-manager.yaml").write_bytes(b"tampered")
    with pytest.raises(KubehoistError, match="differs from its record"):
        files.unpark("cp-1", "kube-controller-manager.yaml")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()


def test_local_park_missing(tmp_path: Path) -> None:
    files = parking.LocalNodeFiles(tmp_path / "manifests")
    with pytest.raises(KubehoistError, match="no such manifest"):
        files.park("cp-1", "kube-controller-manager.yaml")


def _run_script(script: str, host: Path, msg: Path) -> tuple[int, str]:
    script = script.replace(parking.HOST_MOUNT, str(host)).replace("/dev/termination-log", str(msg))
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False)
    return proc.returncode, msg.read_text() if msg.exists() else ""


def test_helper_scripts_round_trip(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    msg = tmp_path / "msg"
    code, out = _run_script(parking.park_script("kube-controller-manager.yaml"), etc, msg)
    digest = hashlib.sha256(MANIFEST).hexdigest()
    assert (code, out.strip()) == (0, f"parked {digest}")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()
    record = json.loads(
        (etc / "kubehoist/parked/kube-controller-manager.yaml.kubehoist.json").read_text()
    )
    assert record["sha256"] == digest and record["size"] == len(MANIFEST)
    code, out = _run_script(parking.park_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.split()[0]) == (0, "already-parked")
    code, out = _run_script(parking.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.strip()) == (0, f"unparked {digest} -")
    assert (etc / "manifests/kube-controller-manager.yaml").read_bytes() == MANIFEST
    assert sorted(p.name for p in (etc / "manifests").iterdir()) == ["kube-controller-manager.yaml"]
    code, out = _run_script(parking.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.split()[0]) == (0, "already-in-place")


def test_helper_unpark_refuses_a_changed_copy(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    msg = tmp_path / "msg"
    _run_script(parking.park_script("kube-controller-manager.yaml"), etc, msg)
    (etc / "kubehoist/parked/kube-controller-manager.yaml").write_bytes(b"tampered")
    code, out = _run_script(parking.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert code == 4 and out.startswith("record-differs")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()


def test_parse_result() -> None:
    ok = parking.parse_result("cp-1", "f.yaml", "parked abc\n", 0)
    assert (ok.state, ok.sha256) == ("parked", "abc")
    assert parking.parse_result("cp-1", "f.yaml", "", 0).state == "done"
    with pytest.raises(KubehoistError, match=r"node cp-1: .*exit 3.*missing"):
        parking.parse_result("cp-1", "f.yaml", "", 3)
    with pytest.raises(KubehoistError, match="copy-differs"):
        parking.parse_result("cp-1", "f.yaml", "copy-differs", 4)


def test_image_policy() -> None:
    _check_image_policy("registry.k8s.io/kube-controller-manager:v1.36.3", "x/kcm:v1.36.3")
    _check_image_policy("registry.k8s.io/kube-controller-manager:v1.35.0", "x/kcm:v1.36.3")
    _check_image_policy("localhost:5000/kcm", "x/kcm:v1.36.3")  # no tag: nothing to compare
    with pytest.raises(KubehoistError, match="newer than the static pod"):
        _check_image_policy("registry.k8s.io/kube-controller-manager:v1.37.0", "x/kcm:v1.36.3")


def test_state_round_trip_and_bad_record() -> None:
    st = PivotState(component="kube-controller-manager", done=("preflight",), parked={"cp-1": "ab"})
    cm = ConfigMap(
        metadata=ObjectMeta(name="kubehoist-pivot-kube-controller-manager", resourceVersion="7"),
        data=st.to_data(),
    )
    back = PivotState.from_configmap(cm)
    assert (back.done, back.parked, back.resource_version) == (("preflight",), {"cp-1": "ab"}, "7")
    assert back.with_done("credentials").done == ("preflight", "credentials")
    bad = ConfigMap(metadata=ObjectMeta(name="kubehoist-pivot-x"), data={"state.json": "{"})
    with pytest.raises(KubehoistError, match=r"kubehoist-pivot-x: data.state.json unreadable"):
        PivotState.from_configmap(bad)


def test_static_pod_name_is_the_kubelets() -> None:
    assert parking.static_pod_name("kube-controller-manager.yaml", "CP-2") == (
        "kube-controller-manager-cp-2"
    )


def test_unpark_clears_the_stopped_sandboxes_with_the_nodes_crictl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the manifest goes back, the pod's stopped sandboxes are removed (the
    kubelet would otherwise apply its crash back-off to the restored pod)."""
    calls = tmp_path / "calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    crictl = bindir / "crictl"
    crictl.write_text(
        f"""#!/bin/sh
echo "$*" >> {calls}
case "$1" in pods) echo aaa; echo bbb;; esac
"""
    )
    crictl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "kube-controller-manager.yaml").write_bytes(MANIFEST)
    files = parking.LocalNodeFiles(manifests)
    files.park("cp-1", "kube-controller-manager.yaml")
    assert not calls.exists()
    result = files.unpark("cp-1", "kube-controller-manager.yaml")
    assert result.cleared == "cleared-2"
    lines = calls.read_text().splitlines()
    assert lines[0] == (
        "pods --namespace ^kube-system$ --name ^kube\\-controller\\-manager\\-cp\\-1$ "
        "--state notready -q"
    )
    assert lines[1:] == ["rmp aaa", "rmp bbb"]
    assert (manifests / "kube-controller-manager.yaml").read_bytes() == MANIFEST


def test_unpark_without_crictl_still_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "kube-scheduler.yaml").write_bytes(MANIFEST)
    files = parking.LocalNodeFiles(manifests)
    files.park("cp-1", "kube-scheduler.yaml")
    assert files.unpark("cp-1", "kube-scheduler.yaml").cleared == "no-crictl"
    assert (manifests / "kube-scheduler.yaml").read_bytes() == MANIFEST
