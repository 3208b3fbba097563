"""Files named by flags render has no file entry for, found by their path.

Every absolute path in a flag value that resolves through a hostPath volume mount is a
file the component reads: render carries it (Secret mode, image mode, an existing
Secret's key list) and the flag names the carried copy; or it refuses in one line.
"""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehoist.errors import KubehoistError
from kubehoist.hostfiles import MAX_FILE_BYTES, gather_inputs
from kubehoist.manifest import StaticPod, load_static_pod
from kubehoist.render import Rendered, RenderOptions, render
from kubehoist.render.needs import value_paths
from tests.unit.fakenode import ENDPOINT, FakeNode, Pki
from tests.unit.test_render_cli import KUBEADM

CREDS = "/etc/kubehoist/credentials"
EXTRA_MOUNT = (
    "    volumeMounts:\n"
    "    - mountPath: /etc/kubernetes/extra\n      name: extra\n      readOnly: true\n"
)
EXTRA_VOLUME = (
    "  volumes:\n  - hostPath:\n      path: /srv/extra\n      type: Directory\n    name: extra\n"
)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def kubeadm_pod(*flags: str) -> StaticPod:
    text = KUBEADM.read_text()
    text = text.replace(
        "    - --use-service-account-credentials=true\n",
        "    - --use-service-account-credentials=true\n" + "".join(f"    - {f}\n" for f in flags),
    )
    text = text.replace("    volumeMounts:\n", EXTRA_MOUNT, 1).replace("  volumes:\n", EXTRA_VOLUME)
    return load_static_pod(text, source="kcm.yaml")


def rendered(pod: StaticPod, root: Path, pki: Pki, **kw: Any) -> Rendered:
    options = RenderOptions(now=datetime.now(UTC), **kw)
    FakeNode(root, pki).populate(pod, options)
    return render(pod, options, gather_inputs(pod, options, host_root=root))


def objects(result: Rendered) -> dict[str, Any]:
    return {o["kind"]: o for o in result.objects}


def command(result: Rendered) -> list[str]:
    spec = objects(result)["Deployment"]["spec"]["template"]["spec"]
    return list(spec["containers"][0]["command"])


def secret_data(result: Rendered) -> dict[str, bytes]:
    data = objects(result)["Secret"]["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def test_value_paths() -> None:
    assert value_paths("/a/b") == ((0, 4),)
    assert value_paths("/a,/b,x,/") == ((0, 2), (3, 5))
    assert value_paths("k=/a,j=/b,l=x") == ((2, 4), (7, 9))
    assert value_paths("10.0.0.0/8") == ()
    assert value_paths("https://x/y") == ()


def test_an_unknown_file_flag_on_a_host_path_is_carried(tmp_path: Path, pki: Pki) -> None:
    pod = kubeadm_pod(
        "--allow-metric-labels-manifest=/etc/kubernetes/extra/allow-labels.yaml",
        "--frobnicate-files=a=/etc/kubernetes/extra/a.yaml,b=/etc/kubernetes/extra/sub/b.yaml",
        "--authorization-always-allow-paths=/healthz,/etc/kubernetes/extra/a.yaml",
    )
    result = rendered(pod, tmp_path, pki)
    cmd = command(result)
    assert f"--allow-metric-labels-manifest={CREDS}/allow-labels.yaml" in cmd
    assert f"--frobnicate-files=a={CREDS}/a.yaml,b={CREDS}/b.yaml" in cmd
    assert "--authorization-always-allow-paths=/healthz,/etc/kubernetes/extra/a.yaml" in cmd
    data = secret_data(result)
    assert data["allow-labels.yaml"] == (tmp_path / "srv/extra/allow-labels.yaml").read_bytes()
    assert {"a.yaml", "b.yaml"} <= set(data)
    warned = [w for w in result.warnings if "render does not know" in w]
    assert len(warned) == 3, result.warnings
    assert "/etc/kubernetes/extra/allow-labels.yaml (--allow-metric-labels-manifest)" in warned[0]


def test_a_found_file_is_checked_as_what_it_is(tmp_path: Path, pki: Pki) -> None:
    pod = kubeadm_pod(
        "--frobnicate-kubeconfig=/etc/kubernetes/extra/other.conf",
        "--frobnicate-key=/etc/kubernetes/extra/signing.key",
    )
    result = rendered(pod, tmp_path, pki)
    other = yaml.safe_load(secret_data(result)["other.conf"])
    assert other["kind"] == "Config"
    assert other["clusters"][0]["cluster"]["server"] == ENDPOINT  # rewritten like --kubeconfig
    (tmp_path / "srv/extra/signing.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n")
    options = RenderOptions(now=datetime.now(UTC))
    with pytest.raises(KubehoistError, match=r"signing.key \(--frobnicate-key\): not a PEM"):
        render(pod, options, gather_inputs(pod, options, host_root=tmp_path))


def test_both_credentials_modes_and_an_existing_secret_agree(tmp_path: Path, pki: Pki) -> None:
    pod = kubeadm_pod("--allow-metric-labels-manifest=/etc/kubernetes/extra/allow-labels.yaml")
    secret = rendered(pod, tmp_path / "a", pki)
    image = rendered(pod, tmp_path / "b", pki, credentials="image", image="reg/kcm:baked")
    existing = render(
        pod, RenderOptions(now=datetime.now(UTC), secret_name="mine", secret_exists=True)
    )
    assert image.image_context is not None
    assert [p for p, _ in image.image_context.files] == [
        f"credentials/{k}" for k in sorted(secret_data(secret))
    ]
    assert secret.secret_keys == image.secret_keys == existing.secret_keys
    assert "allow-labels.yaml" in existing.secret_keys
    assert command(secret) == command(image) == command(existing)
    assert any("allow-labels.yaml" in w and "must hold" in w for w in existing.warnings)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "is a directory, not a file"),
        (lambda p: p.symlink_to("/nonexistent-kubehoist"), "no such file"),
        (
            lambda p: p.write_bytes(b"#" * (MAX_FILE_BYTES + 1)),
            f"larger than {MAX_FILE_BYTES} bytes",
        ),
    ],
)
def test_a_found_path_that_is_not_a_readable_file_is_refused(
    tmp_path: Path, pki: Pki, make: Any, reason: str
) -> None:
    pod = kubeadm_pod("--allow-metric-labels-manifest=/etc/kubernetes/extra/allow-labels.yaml")
    options = RenderOptions(now=datetime.now(UTC))
    FakeNode(tmp_path, pki).populate(pod, options)
    target = tmp_path / "srv/extra/allow-labels.yaml"
    target.unlink()
    make(target)
    with pytest.raises(KubehoistError) as info:
        gather_inputs(pod, options, host_root=tmp_path)
    assert info.value.message == (
        "kcm.yaml: spec.containers[0].command[18]: --allow-metric-labels-manifest "
        "/etc/kubernetes/extra/allow-labels.yaml: cannot read "
        f"{tmp_path}/srv/extra/allow-labels.yaml: {reason}"
    )


def test_a_socket_is_refused_without_being_opened(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = kubeadm_pod("--allow-metric-labels-manifest=/etc/kubernetes/extra/allow-labels.yaml")
    options = RenderOptions(now=datetime.now(UTC))
    FakeNode(tmp_path, pki).populate(pod, options)
    (tmp_path / "srv/extra/allow-labels.yaml").unlink()
    monkeypatch.chdir(tmp_path / "srv/extra")  # a socket path must be short: bind relatively
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("allow-labels.yaml")
        with pytest.raises(KubehoistError, match=r"allow-labels\.yaml: is a socket, not a file$"):
            gather_inputs(pod, options, host_root=tmp_path)


SCHEDULER = (
    Path(__file__).parent / "corpus/kube-scheduler/written-kubeadm-v1.36-config-extra-volume.yaml"
)


def scheduler_node(root: Path, pki: Pki, config: dict[str, Any]) -> StaticPod:
    pod = load_static_pod(SCHEDULER.read_text(), source="sched.yaml")
    node = FakeNode(root, pki)
    node.populate(pod, RenderOptions(now=datetime.now(UTC)))
    node.write("/etc/kubernetes/scheduler/config.yaml", yaml.safe_dump(config).encode())
    node.write("/etc/kubernetes/scheduler/extender.crt", pki.cert_pem("extender"))
    node.write("/etc/kubernetes/scheduler/extender.key", pki.key_pem())
    node.write("/etc/kubernetes/scheduler/kubeconfig", pki.kubeconfig())
    return pod


CONFIG = {
    "apiVersion": "kubescheduler.config.k8s.io/v1",
    "kind": "KubeSchedulerConfiguration",
    "clientConnection": {"kubeconfig": "kubeconfig"},
    "extenders": [
        {
            "urlPrefix": "https://extender.example:8443",
            "tlsConfig": {
                "certFile": "/etc/kubernetes/scheduler/extender.crt",
                "keyFile": "/etc/kubernetes/scheduler/extender.key",
                "caFile": "/etc/ssl/certs/ca.crt",
            },
        }
    ],
}


@pytest.mark.parametrize("mode", ["secret", "image"])
def test_scheduler_config_and_the_files_it_names(tmp_path: Path, pki: Pki, mode: str) -> None:
    pod = scheduler_node(tmp_path, pki, CONFIG)
    kw: dict[str, Any] = {"credentials": "image", "image": "reg/s:1"} if mode == "image" else {}
    options = RenderOptions(now=datetime.now(UTC), **kw)
    result = render(pod, options, gather_inputs(pod, options, host_root=tmp_path))
    if mode == "image":
        assert result.image_context is not None
        files = {p.split("/", 1)[1]: c for p, c in result.image_context.files}
    else:
        files = secret_data(result)
    assert {"config.yaml", "kubeconfig", "extender.crt", "extender.key"} <= set(files)
    config = yaml.safe_load(files["config.yaml"])
    assert config["clientConnection"]["kubeconfig"] == f"{CREDS}/kubeconfig"
    tls = config["extenders"][0]["tlsConfig"]
    assert tls == {
        "certFile": f"{CREDS}/extender.crt",
        "keyFile": f"{CREDS}/extender.key",
        "caFile": "/etc/ssl/certs/ca.crt",  # not on any volume: inside the image
    }
    assert f"--config={CREDS}/config.yaml" in command(result)


def test_scheduler_config_of_another_kind_is_refused(tmp_path: Path, pki: Pki) -> None:
    pod = scheduler_node(tmp_path, pki, {**CONFIG, "kind": "KubeletConfiguration"})
    options = RenderOptions(now=datetime.now(UTC))
    with pytest.raises(KubehoistError) as info:
        gather_inputs(pod, options, host_root=tmp_path)
    assert info.value.message == (
        "/etc/kubernetes/scheduler/config.yaml: kind: expected KubeSchedulerConfiguration, "
        "got 'KubeletConfiguration'"
    )
