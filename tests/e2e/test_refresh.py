"""Credentials that expire, in the lab: status shows the days left of the Deployment's
client certificate; after `kubeadm certs renew controller-manager.conf` on the node,
`credentials refresh` puts the node's new certificate into the Secret and rolls the
Deployment onto it, and a leader comes back."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret

from kubehoist.constants import CREDENTIALS_SHA256_ANNOTATION
from kubehoist.lab import kubeadm
from kubehoist.pivot.refresh import content_sha256
from tests.e2e.conftest import LabHandle, kubehoist
from tests.e2e.test_pivot import (
    COMPONENT,
    holder,
    pivot_args,
    rollback_args,
    static_leads,
    wait_for,
)

pytestmark = pytest.mark.lab

SECRET = f"{COMPONENT}-credentials"
CONF = "etc/kubernetes/controller-manager.conf"


def client_cert(kubeconfig: bytes) -> x509.Certificate:
    doc = yaml.safe_load(kubeconfig)
    pem = base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
    return x509.load_pem_x509_certificate(pem)


def secret_cert(lab: LabHandle) -> x509.Certificate:
    secret = lab.client.get(Secret, SECRET, namespace="kube-system")
    assert secret.data is not None
    return client_cert(base64.b64decode(secret.data["controller-manager.conf"]))


def node_root(lab: LabHandle) -> Path:
    return lab.spec.api_node.root(lab.spec.root)


def deployment_pods(lab: LabHandle) -> set[str]:
    out = lab.kubectl(
        "get", "pods", "-n", "kube-system", "-o", "name",
        "-l", f"app.kubernetes.io/managed-by=kubehoist,app.kubernetes.io/name={COMPONENT}",
    ).stdout  # fmt: skip
    return set(out.split())


@pytest.fixture
def pivoted(lab: LabHandle) -> Iterator[None]:
    wait_for("the static controller manager to lead", lambda: static_leads(lab))
    kubehoist(*pivot_args(lab))
    yield
    out = kubehoist(*rollback_args(lab), check=False)
    print(f"rollback exited {out.returncode}:\n{out.stderr}")
    wait_for("the static controller manager to lead", lambda: static_leads(lab), 120)


def test_status_shows_days_left_and_refresh_follows_kubeadm_certs_renew(
    lab: LabHandle, pivoted: None
) -> None:
    conf = node_root(lab) / CONF
    before = client_cert(conf.read_bytes())
    assert secret_cert(lab).serial_number == before.serial_number
    status = kubehoist("status", "--kubeconfig", str(lab.kubeconfig), COMPONENT, "-o", "json")
    [cert] = json.loads(status.stdout)["components"][0]["credentials"]["certificates"]
    assert cert["serialNumber"] == f"{before.serial_number:X}"
    assert cert["level"] == "ok" and 360 <= cert["daysLeft"] <= 365  # kubeadm: one year

    # On the node, as an operator would (the node's kubeadm, in its namespaces).
    kubeadm.run_in_node(lab.spec, lab.spec.api_node, "certs", "renew", "controller-manager.conf")
    renewed = client_cert(conf.read_bytes())
    assert renewed.serial_number != before.serial_number
    assert renewed.not_valid_after_utc > before.not_valid_after_utc
    assert secret_cert(lab).serial_number == before.serial_number  # nothing copies it yet

    dep = lab.client.get(Deployment, COMPONENT, namespace="kube-system")
    assert dep.spec is not None and dep.spec.template.metadata is not None
    old_sha = (dep.spec.template.metadata.annotations or {})[CREDENTIALS_SHA256_ANNOTATION]
    old_pods = deployment_pods(lab)
    out = kubehoist(
        "credentials", "refresh", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(node_root(lab)), "--timeout", "180",
    )  # fmt: skip
    assert "1 key(s) change: controller-manager.conf" in out.stderr, out.stderr
    assert "runs on the refreshed credentials" in out.stderr, out.stderr

    # The Secret holds the node's renewed certificate ...
    now_in_secret = secret_cert(lab)
    assert now_in_secret.serial_number == renewed.serial_number
    assert now_in_secret.not_valid_after_utc == renewed.not_valid_after_utc
    # ... the pod template names its content, so the Deployment rolled ...
    secret = lab.client.get(Secret, SECRET, namespace="kube-system")
    dep = lab.client.get(Deployment, COMPONENT, namespace="kube-system")
    assert dep.spec is not None and dep.spec.template.metadata is not None
    new_sha = (dep.spec.template.metadata.annotations or {})[CREDENTIALS_SHA256_ANNOTATION]
    assert new_sha == content_sha256(secret.data or {}) != old_sha
    assert not (deployment_pods(lab) & old_pods)
    # ... and a new pod leads.
    assert holder(lab).startswith(f"{COMPONENT}-"), holder(lab)
    assert f"pod/{holder(lab).rpartition('_')[0]}" in deployment_pods(lab)
    status = kubehoist("status", "--kubeconfig", str(lab.kubeconfig), COMPONENT, "-o", "json")
    [cert] = json.loads(status.stdout)["components"][0]["credentials"]["certificates"]
    assert cert["serialNumber"] == f"{renewed.serial_number:X}"

    again = kubehoist(
        "credentials", "refresh", "--kubeconfig", str(lab.kubeconfig),
        "--host-root", str(node_root(lab)),
    )  # fmt: skip
    assert "nothing to do" in again.stderr, again.stderr


def test_a_missing_file_on_the_node_changes_nothing(lab: LabHandle, pivoted: None) -> None:
    conf = node_root(lab) / CONF
    saved = conf.read_bytes()
    before = lab.client.get(Secret, SECRET, namespace="kube-system")
    conf.unlink()
    try:
        out = kubehoist(
            "credentials", "refresh", "--kubeconfig", str(lab.kubeconfig),
            "--host-root", str(node_root(lab)), check=False,
        )  # fmt: skip
    finally:
        conf.write_bytes(saved)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and "/etc/kubernetes/controller-manager.conf" in line
    after = lab.client.get(Secret, SECRET, namespace="kube-system")
    assert after.metadata is not None and before.metadata is not None
    assert after.metadata.resourceVersion == before.metadata.resourceVersion
