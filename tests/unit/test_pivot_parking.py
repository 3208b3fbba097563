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
from kubehoist.nodefiles import parking, scripts
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
    script = script.replace(scripts.HOST_MOUNT, str(host)).replace("/dev/termination-log", str(msg))
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False)
    return proc.returncode, msg.read_text() if msg.exists() else ""


def test_helper_scripts_round_trip(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    msg = tmp_path / "msg"
    code, out = _run_script(scripts.park_script("kube-controller-manager.yaml"), etc, msg)
    digest = hashlib.sha256(MANIFEST).hexdigest()
    assert (code, out.strip()) == (0, f"parked {digest} -")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()
    record = json.loads(
        (etc / "kubehoist/parked/kube-controller-manager.yaml.kubehoist.json").read_text()
    )
    assert record["sha256"] == digest and record["size"] == len(MANIFEST)
    code, out = _run_script(scripts.park_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.split()[0]) == (0, "already-parked")
    code, out = _run_script(scripts.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.strip()) == (0, f"unparked {digest} -")
    assert (etc / "manifests/kube-controller-manager.yaml").read_bytes() == MANIFEST
    assert sorted(p.name for p in (etc / "manifests").iterdir()) == ["kube-controller-manager.yaml"]
    code, out = _run_script(scripts.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert (code, out.split()[0]) == (0, "already-in-place")


def test_helper_unpark_refuses_a_changed_copy(tmp_path: Path) -> None:
    etc = _node(tmp_path)
    msg = tmp_path / "msg"
    _run_script(scripts.park_script("kube-controller-manager.yaml"), etc, msg)
    (etc / "kubehoist/parked/kube-controller-manager.yaml").write_bytes(b"tampered")
    code, out = _run_script(scripts.unpark_script("kube-controller-manager.yaml"), etc, msg)
    assert code == 4 and out.startswith("record-differs")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()


def test_parse_result() -> None:
    ok = scripts.parse_result("cp-1", "f.yaml", "parked abc\n", 0)
    assert (ok.state, ok.sha256, ok.stopped) == ("parked", "abc", False)
    assert scripts.parse_result("cp-1", "f.yaml", "parked abc -", 0).stopped is False
    assert scripts.parse_result("cp-1", "f.yaml", "parked abc stopped", 0).stopped is True
    assert (
        scripts.parse_result("cp-1", "f.yaml", "unparked abc cleared-1", 0).cleared == "cleared-1"
    )
    assert scripts.parse_result("cp-1", "f.yaml", "", 0).state == "done"
    with pytest.raises(KubehoistError, match=r"node cp-1: .*exit 3.*missing"):
        scripts.parse_result("cp-1", "f.yaml", "", 3)
    with pytest.raises(KubehoistError, match="copy-differs"):
        scripts.parse_result("cp-1", "f.yaml", "copy-differs", 4)


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


# --- a parked pod, stopped (parking.STOPPED) ------------------------------------------------


def _fake_crictl(bindir: Path, calls: Path, ready_for: int, *, sandboxes: str = "aaa") -> None:
    """A crictl whose listing of ready sandboxes shows one for the first `ready_for`
    calls; every listing of all sandboxes shows `sandboxes`."""
    bindir.mkdir(parents=True, exist_ok=True)
    crictl = bindir / "crictl"
    crictl.write_text(
        f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in
  *"--state ready"*)
    n=$(grep -c -- "--state ready" {calls})
    if [ "$n" -le {ready_for} ]; then echo aaa; fi;;
  *) [ -n "{sandboxes}" ] && echo {sandboxes};;
esac
exit 0
"""
    )
    crictl.chmod(0o755)


def _manifests(tmp_path: Path) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "kube-controller-manager.yaml").write_bytes(MANIFEST)
    return manifests


def test_local_park_watches_the_runtime_until_the_pod_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    _fake_crictl(tmp_path / "bin", calls, ready_for=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    files = parking.LocalNodeFiles(_manifests(tmp_path), stop_wait_s=5)
    result = files.park("cp-1", "kube-controller-manager.yaml")
    assert result.stopped is True
    ready = [c for c in calls.read_text().splitlines() if "--state ready" in c]
    assert len(ready) == 4  # ready three times, then none
    assert ready[0] == (
        "pods --namespace ^kube-system$ --name ^kube\\-controller\\-manager\\-cp\\-1$ "
        "--state ready -q"
    )


@pytest.mark.parametrize(
    ("sandboxes", "ready_for", "path"),
    [
        ("", 0, "bin"),  # the runtime has no sandbox of the pod: it tells nothing
        ("aaa", 1000, "bin"),  # still ready when the wait ends
        ("aaa", 0, "nothing"),  # no crictl on the node
    ],
)
def test_local_park_without_proof_of_a_stop_says_not_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandboxes: str, ready_for: int, path: str
) -> None:
    _fake_crictl(tmp_path / "bin", tmp_path / "calls", ready_for, sandboxes=sandboxes)
    monkeypatch.setenv("PATH", f"{tmp_path / path}:/usr/bin:/bin")
    manifests = _manifests(tmp_path)
    files = parking.LocalNodeFiles(manifests, stop_wait_s=0.3)
    result = files.park("cp-1", "kube-controller-manager.yaml")
    assert (result.state, result.stopped) == ("parked", False)
    assert not (manifests / "kube-controller-manager.yaml").exists()


def test_local_park_without_a_wait_asks_the_runtime_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    _fake_crictl(tmp_path / "bin", calls, ready_for=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = parking.LocalNodeFiles(_manifests(tmp_path)).park(
        "cp-1", "kube-controller-manager.yaml"
    )
    assert result.stopped is False and not calls.exists()


@pytest.mark.parametrize(
    ("ready_for", "sandboxes", "said"), [(2, "aaa", "stopped"), (1000, "aaa", "-"), (0, "", "-")]
)
def test_helper_park_script_watches_the_nodes_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready_for: int, sandboxes: str, said: str
) -> None:
    """The helper's script runs the node's crictl chrooted into the node's `/`
    (HOST_ROOT); here a chroot stand-in runs the fake crictl found under that root."""
    etc = _node(tmp_path)
    root = tmp_path / "host-root"
    calls = tmp_path / "calls"
    _fake_crictl(root / "usr/bin", calls, ready_for, sandboxes=sandboxes)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "chroot").write_text(
        '#!/bin/sh\nroot="$1"; shift; c="$1"; shift; exec "$root$c" "$@"\n'
    )
    (shim / "chroot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:/usr/bin:/bin")
    script = scripts.park_script("kube-controller-manager.yaml", "cp-1", 1.0)
    code, out = _run_script(script.replace(scripts.HOST_ROOT, str(root)), etc, tmp_path / "msg")
    digest = hashlib.sha256(MANIFEST).hexdigest()
    assert (code, out.strip()) == (0, f"parked {digest} {said}")
    assert not (etc / "manifests/kube-controller-manager.yaml").exists()
    assert scripts.parse_result("cp-1", "f", out).stopped is (said == "stopped")


def test_helper_scripts_print_their_result_last_on_stdout(tmp_path: Path) -> None:
    """What the pivot reads from the helper's log stream is the termination message."""
    etc = _node(tmp_path)
    msg = tmp_path / "msg"
    for script in (scripts.park_script, scripts.unpark_script):
        text = script("kube-controller-manager.yaml").replace(scripts.HOST_MOUNT, str(etc))
        text = text.replace("/dev/termination-log", str(msg))
        proc = subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, check=True)
        assert proc.stdout.splitlines()[-1] == f"{scripts.RESULT} {msg.read_text().strip()}"


def test_crictl_is_pointed_at_the_kubelets_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint comes from the node's KubeletConfiguration (kubeadm's
    /var/lib/kubelet/config.yaml), locally and in the helper's script."""
    calls = tmp_path / "calls"
    _fake_crictl(tmp_path / "bin", calls, ready_for=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    root = tmp_path / "node"
    config = root / "var/lib/kubelet/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        'containerRuntimeEndpoint: "unix:///var/run/containerd/containerd.sock"\n'
    )
    assert parking.runtime_endpoint(root) == "unix:///var/run/containerd/containerd.sock"
    assert parking.runtime_endpoint(tmp_path / "nowhere") is None
    monkeypatch.setattr(parking, "KUBELET_CONFIG", str(config))
    assert parking.runtime_stopped("kube-controller-manager-cp-1") is True
    assert (
        calls.read_text()
        .splitlines()[0]
        .startswith("-r unix:///var/run/containerd/containerd.sock pods --namespace ^kube-system$")
    )
    # the helper's script reads the same line of the node's file
    etc = _node(tmp_path)
    hr = tmp_path / "host-root"
    _fake_crictl(hr / "usr/bin", tmp_path / "calls2", ready_for=1)
    (hr / "var/lib/kubelet").mkdir(parents=True)
    (hr / "var/lib/kubelet/config.yaml").write_text(config.read_text())
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "chroot").write_text(
        '#!/bin/sh\nroot="$1"; shift; c="$1"; shift; exec "$root$c" "$@"\n'
    )
    (shim / "chroot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:/usr/bin:/bin")
    script = scripts.park_script("kube-controller-manager.yaml", "cp-1", 1.0)
    code, out = _run_script(script.replace(scripts.HOST_ROOT, str(hr)), etc, tmp_path / "msg")
    assert code == 0 and out.split()[2] == "stopped", out
    first = (tmp_path / "calls2").read_text().splitlines()[0]
    assert first.startswith("-r unix:///var/run/containerd/containerd.sock pods "), first
