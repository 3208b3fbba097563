"""`kubehoist credentials refresh` against a faked API server and a fake node: the
Secret made again by render from the node's files, the Deployment rolled by its
credentials annotation, nothing written on bad input, the Secret put back when the
roll cannot start."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner, Result

from kubehoist import certexpiry, hostfiles, kube
from kubehoist.cli import cli
from kubehoist.constants import CREDENTIALS_SHA256_ANNOTATION
from kubehoist.manifest import load_static_pod
from kubehoist.pivot.refresh import content_sha256
from kubehoist.render import RenderOptions, render
from kubehoist.render.kubeconfig import load
from tests.unit.fakenode import ENDPOINT, FakeNode, Pki
from tests.unit.kubefake import write_kubeconfig

CORPUS = Path(__file__).parent / "corpus" / "kube-controller-manager"
KUBEADM = CORPUS / "kubeadm-v1.30.14.yaml"
KCM = "kube-controller-manager"
CONF = "/etc/kubernetes/controller-manager.conf"
NS = "/namespaces/kube-system"


def _status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    return httpx2.Response(code, json={**body, "reason": reason, "message": message})


class FakeApi:
    """The Deployment and Secret a pivot made; records every write."""

    def __init__(self, objects: tuple[Any, ...]) -> None:
        by_kind = {o["kind"]: json.loads(json.dumps(o)) for o in objects}
        self.secret: dict[str, Any] = by_kind["Secret"]
        self.deployment: dict[str, Any] = by_kind["Deployment"]
        self.writes: list[tuple[str, str, Any]] = []
        self.refuse_patch = False
        self.deployment_missing = False

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path, request.method
        name = self.secret["metadata"]["name"]
        if path == f"/apis/apps/v1{NS}/deployments/{KCM}" and self.deployment_missing:
            return _status(404, "NotFound", f'deployments.apps "{KCM}" not found')
        if path == f"/apis/apps/v1{NS}/deployments/{KCM}":
            if method == "PATCH":
                self.writes.append(("deployment", request.headers["content-type"], _body(request)))
                if self.refuse_patch:
                    return _status(403, "Forbidden", "deployments is forbidden")
                ann = _body(request)["spec"]["template"]["metadata"]["annotations"]
                self.deployment["spec"]["template"]["metadata"]["annotations"].update(ann)
            return httpx2.Response(200, json=self.deployment)
        if path == f"/api/v1{NS}/secrets/{name}":
            if method == "PATCH":
                body = _body(request)
                self.writes.append(("secret", request.headers["content-type"], body))
                self.secret["data"] = body["data"]
            return httpx2.Response(200, json=self.secret)
        if path == f"/api/v1{NS}/events" and method == "POST":
            return httpx2.Response(201, json=_body(request))
        return _status(404, "NotFound", f"{method} {path}: not found")


def _body(request: httpx2.Request) -> Any:
    return json.loads(request.content)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeNode, FakeApi, Path]:
    pki = Pki()
    node = FakeNode(tmp_path / "node", pki)
    pod = load_static_pod(KUBEADM.read_text(), source=KUBEADM.name)
    options = RenderOptions(now=datetime.now(UTC))
    node.populate(pod, options)
    # pivot parked the manifest: refresh finds it there
    node.write(f"/etc/kubernetes/kubehoist/parked/{KCM}.yaml", KUBEADM.read_bytes())
    rendered = render(pod, options, hostfiles.gather_inputs(pod, options, host_root=node.root))
    api = FakeApi(rendered.objects)
    transport = httpx2.MockTransport(api.handler)
    monkeypatch.setattr(kube.client, "tls_transport", lambda config: transport)
    return node, api, write_kubeconfig(tmp_path / "config")


def run(node: FakeNode, kubeconfig: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "credentials", "refresh", "--kubeconfig", str(kubeconfig),
            "--host-root", str(node.root), "--no-wait", *args,
        ],
    )  # fmt: skip


def conf_cert(secret: dict[str, Any]) -> certexpiry.ClientCert:
    files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    certs, _ = certexpiry.client_certs(files)
    [c] = [c for c in certs if c.secret_key == "controller-manager.conf"]
    return c


def test_renewed_file_refreshes_the_secret_and_rolls_the_deployment(
    setup: tuple[FakeNode, FakeApi, Path],
) -> None:
    node, api, kc = setup
    before = conf_cert(api.secret)
    old_data = dict(api.secret["data"])
    node.write(CONF, node.pki.kubeconfig())  # what `kubeadm certs renew` does: a new cert
    result = run(node, kc)
    assert result.exit_code == 0, result.output
    assert "1 key(s) change: controller-manager.conf" in result.stderr
    [secret_write, dep_write] = api.writes
    assert secret_write[1] == "application/apply-patch+yaml"  # server-side apply, as pivot
    assert secret_write[2]["data"].keys() == old_data.keys()
    changed = [k for k in old_data if old_data[k] != secret_write[2]["data"][k]]
    assert changed == ["controller-manager.conf"]
    after = conf_cert(api.secret)
    assert after.serial != before.serial
    # the kubeconfig keeps pivot's server (the control-plane endpoint), not the node's
    doc = load(base64.b64decode(api.secret["data"]["controller-manager.conf"]), name="x")
    assert doc["clusters"][0]["cluster"]["server"] == ENDPOINT
    # only the annotation is patched, and it is the content hash of the new Secret
    assert dep_write[2] == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        CREDENTIALS_SHA256_ANNOTATION: content_sha256(api.secret["data"])
                    }
                }
            }
        }
    }
    assert f"serial {before.serial}, not after" in result.stderr
    assert f"-> serial {after.serial}, not after" in result.stderr
    # run again: nothing to do, nothing written
    api.writes.clear()
    result = run(node, kc)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.stderr and api.writes == []


def test_dry_run_writes_nothing(setup: tuple[FakeNode, FakeApi, Path]) -> None:
    node, api, kc = setup
    node.write(CONF, node.pki.kubeconfig())
    result = run(node, kc, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was changed" in result.stderr
    assert api.writes == []


def test_a_missing_file_on_the_node_is_one_line_and_nothing_changes(
    setup: tuple[FakeNode, FakeApi, Path],
) -> None:
    node, api, kc = setup
    (node.root / CONF.lstrip("/")).unlink()
    result = run(node, kc)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and CONF in line and "no such file" in line
    assert api.writes == []


def test_an_expired_file_on_the_node_is_one_line_and_nothing_changes(
    setup: tuple[FakeNode, FakeApi, Path],
) -> None:
    node, api, kc = setup
    now = datetime.now(UTC)
    expired = node.pki.cert_pem(
        "system:kube-controller-manager",
        not_after=now - timedelta(days=1),
        not_before=now - timedelta(days=400),
    )
    conf = node.pki.kubeconfig().decode().split("client-certificate-data: ")
    rest = conf[1].split("\n", 1)[1]
    node.write(
        CONF, (conf[0] + "client-certificate-data: " + base64.b64encode(expired).decode())
        .encode() + b"\n" + rest.encode(),
    )  # fmt: skip
    result = run(node, kc)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {CONF}: users[0].user.client-certificate-data: certificate")
    assert "expired on" in line
    assert api.writes == []


def test_the_secret_is_put_back_when_the_roll_cannot_start(
    setup: tuple[FakeNode, FakeApi, Path],
) -> None:
    node, api, kc = setup
    old_data = dict(api.secret["data"])
    node.write(CONF, node.pki.kubeconfig())
    api.refuse_patch = True
    result = run(node, kc)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Deployment kube-system/{KCM}: cannot roll it (deployments is forbidden); "
        f"Secret kube-system/{KCM}-credentials put back as it was"
    )
    assert [w[0] for w in api.writes] == ["secret", "deployment", "secret"]
    assert api.secret["data"] == old_data


def test_not_pivoted_is_one_line(setup: tuple[FakeNode, FakeApi, Path]) -> None:
    node, api, kc = setup
    api.deployment_missing = True
    result = run(node, kc)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: Deployment kube-system/{KCM} not found: {KCM} is not pivoted, its static "
        "pods read the node's files directly"
    )
