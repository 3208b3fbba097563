"""The real lab node's pure parts: the kubelet's command line as kubeadm's drop-in makes
it, containerd's and CNI's configuration, node names and hostnames."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from kubehoist.lab import kubeadm, node, nodeconfig
from kubehoist.lab.spec import plan


def test_kubelet_argv_is_kubeadm_drop_in() -> None:
    flags = (
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/'
        'containerd.sock --cgroup-root=/kubehoist-ab12/cp-1 --hostname-override=cp-1"\n'
    )
    extra = "# the user's\nKUBELET_EXTRA_ARGS=--v=2\n"
    argv = node.kubelet_argv(Path("/bin/kubelet"), extra, flags)
    assert argv == [
        "/bin/kubelet",
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
        "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
        "--cgroup-root=/kubehoist-ab12/cp-1",
        "--hostname-override=cp-1",
        "--v=2",
    ]


def test_kubelet_argv_without_env_files() -> None:
    assert node.kubelet_argv(Path("/k"), "", "")[1:] == [
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
    ]


def test_containerd_config_is_valid_toml_with_what_this_machine_needs() -> None:
    cfg = nodeconfig.NodeConfig(
        containerd_bin_dir=Path("/c"),
        kubelet=Path("/k"),
        containerd=Path("/c/containerd"),
        ctr=Path("/c/ctr"),
        crictl=Path("/c/crictl"),
    )
    data = tomllib.loads(nodeconfig.containerd_config(cfg))
    assert data["version"] == 3
    runtime = data["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]
    images = data["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == cfg.pause_image
    assert data["grpc"]["address"] == nodeconfig.CONTAINERD_SOCKET


def test_cni_config_uses_the_node_pod_cidr() -> None:
    spec = plan(Path("/tmp/x"), control_planes=1, workers=1)
    worker = spec.workers[0]
    conf = json.loads(nodeconfig.cni_config(worker))
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipam"]["ranges"] == [[{"subnet": worker.pod_cidr}]]


def test_one_ha_node_has_an_fqdn_hostname_and_kubelet_keeps_its_node_name() -> None:
    spec = plan(Path("/tmp/x"), control_planes=3, workers=0)
    assert [n.os_hostname for n in spec.nodes] == [
        "cp-1",
        "cp-2.lab.kubehoist.internal",
        "cp-3",
    ]
    keys = kubeadm.JoinSecrets("abcdef.0123456789abcdef", "1" * 64)
    cfg = kubeadm.join_config(spec, spec.node("cp-2"), keys, "sha256:" + "2" * 64)
    assert "name: cp-2\n" in cfg
    assert f"value: /kubehoist-{spec.lab_id}/cp-2" in cfg


def test_env_file_parsing_is_systemd_like() -> None:
    env = node.parse_env_file('A="x y"\n# c\nB=z\n\nbad line\n')
    assert env == {"A": "x y", "B": "z"}


def test_service_start_stop_restart_as_systemd(tmp_path: Path) -> None:
    """The init's kubelet unit: `stop` keeps it stopped (no Restart=always), `start`
    runs it again, `restart` gives a new process; a crash waits for the restart delay."""
    svc = node._Service("k", ["sleep", "60"], {"PATH": "/usr/bin:/bin"}, 60.0, tmp_path / "k.log")
    try:
        svc.start()
        first = svc.proc
        assert first is not None and svc.active_state == "active"
        svc.control("restart")
        assert svc.proc is not None and svc.proc is not first and first.poll() is not None
        svc.control("stop")
        assert svc.active_state == "inactive"
        svc.poll()
        assert svc.proc is None  # stopped: not restarted
        svc.control("start")
        assert svc.active_state == "active"
        svc.proc.kill()
        svc.proc.wait()
        svc.poll()
        assert svc.active_state == "activating"  # waiting for its restart delay
    finally:
        svc.stop(1)
