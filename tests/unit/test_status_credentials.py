"""`kubehoist status` shows the days left of the Deployment's client certificates,
read from its credentials Secret: a warning under 30 days, an error once expired, no
key material anywhere."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import kubehoist.kube.client as kube_client
from kubehoist import certexpiry
from kubehoist.cli import cli
from kubehoist.constants import CREDENTIALS_DIR, object_labels
from tests.unit.fakenode import Pki
from tests.unit.kubefake import UUID_A, FakeCluster, lease, pod, write_kubeconfig

KCM = "kube-controller-manager"
SECRET = f"{KCM}-credentials"
PKI = Pki()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cert: bytes, *, user: str = "system:kube-controller-manager") -> bytes:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k", "cluster": {"server": "https://lb:6443"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": user}}],
        "current-context": "c",
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(KEY)},
            }
        ],
    }
    return yaml.safe_dump(doc).encode()


KEY = PKI.key_pem()


def deployment(secret: str = SECRET) -> dict[str, Any]:
    return {
        "metadata": {"name": KCM, "namespace": "kube-system", "labels": object_labels(KCM)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": KCM}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": KCM,
                            "volumeMounts": [
                                {"name": "kubehoist-credentials", "mountPath": CREDENTIALS_DIR}
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "kubehoist-credentials", "secret": {"secretName": secret}}
                    ],
                }
            },
        },
    }


def secret(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "metadata": {"name": SECRET, "namespace": "kube-system"},
        "data": {k: b64(v) for k, v in files.items()},
    }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster(
        leases=[lease(KCM, holder=f"kcm-abc_{UUID_A}")],
        pods=[pod("kcm-abc", node="w-1"), pod("kcm-def", node="w-2")],
    )
    monkeypatch.setattr(kube_client, "async_tls_transport", lambda config: cluster.transport())
    return cluster


def run(tmp_path: Path, *args: str) -> Any:
    kc = write_kubeconfig(tmp_path / "kubeconfig")
    return CliRunner().invoke(cli, ["status", KCM, "--kubeconfig", str(kc), *args])


def cert(days: float) -> bytes:
    now = datetime.now(UTC)
    return PKI.cert_pem(
        "system:kube-controller-manager",
        not_after=now + timedelta(days=days),
        not_before=now - timedelta(days=400),
    )


def test_days_left_in_the_table_and_json(fake: FakeCluster, tmp_path: Path) -> None:
    fake.deployments.append(deployment())
    fake.secrets.append(secret({"controller-manager.conf": kubeconfig(cert(200.5)), "ca.crt": b""}))
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    [row] = [r for r in result.stdout.splitlines() if r.startswith(f"{KCM}   kube-system/")]
    assert row.split()[:3] == [KCM, f"kube-system/{SECRET}", "controller-manager.conf"]
    assert row.split()[-1] == "200"
    assert "warning" not in result.stderr and "error" not in result.stderr
    doc = json.loads(run(tmp_path, "-o", "json").stdout)
    creds = doc["components"][0]["credentials"]
    assert creds["secret"] == f"kube-system/{SECRET}"
    [c] = creds["certificates"]
    assert (c["secretKey"], c["user"], c["daysLeft"], c["level"]) == (
        "controller-manager.conf",
        "system:kube-controller-manager",
        200,
        "ok",
    )
    assert c["subject"] == "CN=system:kube-controller-manager"
    assert doc["components"][0]["credentialsError"] is None


def test_under_30_days_warns_and_expired_is_an_error(fake: FakeCluster, tmp_path: Path) -> None:
    fake.deployments.append(deployment())
    fake.secrets.append(
        secret(
            {
                "controller-manager.conf": kubeconfig(cert(12.5)),
                "other.conf": kubeconfig(cert(-2), user="old"),
            }
        )
    )
    result = run(tmp_path)
    lines = result.stderr.splitlines()
    [warning] = [x for x in lines if x.startswith("warning: ")]
    assert "controller-manager.conf" in warning and "expires in 12 days" in warning
    assert "kubeadm certs renew" in warning and "credentials refresh" in warning
    [error] = [x for x in lines if x.startswith("error: ")]
    assert "other.conf (user old" in error and "client certificate expired on" in error
    # the verdict (the Lease) decides the exit code, not the certificates
    assert result.exit_code == 0
    levels = [
        c["level"]
        for c in json.loads(run(tmp_path, "-o", "json").stdout)["components"][0]["credentials"][
            "certificates"
        ]
    ]
    assert levels == ["warning", "error"]


def test_no_key_material_is_ever_printed(fake: FakeCluster, tmp_path: Path) -> None:
    fake.deployments.append(deployment())
    conf = kubeconfig(cert(5))
    fake.secrets.append(secret({"controller-manager.conf": conf, "sa.key": KEY}))
    for args in ((), ("-o", "json"), ("-o", "yaml"), ("-o", "wide")):
        out = run(tmp_path, *args).output
        assert "PRIVATE KEY" not in out
        assert b64(KEY)[:40] not in out and b64(conf)[:40] not in out


def test_a_certificate_file_named_in_the_kubeconfig_is_another_key() -> None:
    doc = yaml.safe_load(kubeconfig(cert(50)))
    body = doc["users"][0]["user"]
    del body["client-certificate-data"]
    body["client-certificate"] = f"{CREDENTIALS_DIR}/kcm.crt"
    files = {"k.conf": yaml.safe_dump(doc).encode(), "kcm.crt": cert(50)}
    certs, problems = certexpiry.client_certs(files)
    assert problems == () and [c.secret_key for c in certs] == ["k.conf"]
    del files["kcm.crt"]
    certs, problems = certexpiry.client_certs(files)
    assert certs == ()
    assert problems == (
        f"k.conf: users[0].user.client-certificate: {CREDENTIALS_DIR}/kcm.crt is not a key "
        "of the Secret",
    )


def test_a_missing_secret_or_unreadable_secrets_never_fail_status(
    fake: FakeCluster, tmp_path: Path
) -> None:
    fake.deployments.append(deployment())
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert f"warning: Secret kube-system/{SECRET}, which Deployment {KCM} mounts, is missing" in (
        result.stderr
    )
    fake.forbid = {"secrets"}
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "credentials not shown: forbidden: cannot get secrets" in result.stdout


def test_no_deployment_nothing_shown(fake: FakeCluster, tmp_path: Path) -> None:
    result = run(tmp_path)
    assert "SECRET" not in result.stdout and "credentials" not in result.output
    assert json.loads(run(tmp_path, "-o", "json").stdout)["components"][0]["credentials"] is None
