"""Signing the guards' client certificates through the API: a
CertificateSigningRequest for the API server client signer, approved and awaited (the
controller manager signs), and the cluster CA bundle the guards' kubeconfigs trust.
The other issuer, on the node with its CA key, is `guard.credentials`."""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from collections.abc import Callable

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.certificates_v1 import (
    CertificateSigningRequestCondition,
    CertificateSigningRequestSpec,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.certificates_v1 import (
    CertificateSigningRequest,
    CertificateSigningRequestApproval,
)
from lightkube.resources.core_v1 import ConfigMap

from kubehoist.constants import object_labels
from kubehoist.errors import KubehoistError
from kubehoist.kube import retry
from kubehoist.kube.errors import Call, NotFoundError, api_errors

SIGNER = "kubernetes.io/kube-apiserver-client"
NAMESPACE = "kube-system"


def issue_certificate(
    client: Client,
    *,
    node: str,
    csr_pem: bytes,
    validity_s: int,
    server: str,
    timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """Create, approve and wait for a CertificateSigningRequest; return the certificate
    PEM. The request object is deleted afterwards."""
    name = f"kubehoist-guard-{node}-{secrets.token_hex(3)}"[:253]
    csr = CertificateSigningRequest(
        metadata=ObjectMeta(name=name, labels=object_labels("kubehoist-guard")),
        spec=CertificateSigningRequestSpec(
            request=base64.b64encode(csr_pem).decode(),
            signerName=SIGNER,
            expirationSeconds=max(600, validity_s),
            usages=["digital signature", "client auth"],
        ),
    )
    call = Call(verb="create", resource="certificatesigningrequests", name=name)
    try:
        with api_errors(call, server=server):
            client.create(csr)
        call = Call(verb="update", resource="certificatesigningrequests/approval", name=name)
        with api_errors(call, server=server):
            current = client.get(CertificateSigningRequest, name)
            approval = CertificateSigningRequestApproval(
                metadata=current.metadata,
                spec=current.spec,
                status=current.status,
            )
            assert approval.status is not None
            approval.status.conditions = [
                *(approval.status.conditions or []),
                CertificateSigningRequestCondition(
                    type="Approved",
                    status="True",
                    reason="KubehoistGuardInstall",
                    message=f"kubehoist guard install: the guard of node {node}",
                ),
            ]
            client.replace(approval, name)
        deadline = time.monotonic() + timeout_s
        call = Call(verb="get", resource="certificatesigningrequests", name=name)
        while True:
            with retry.within(deadline - time.monotonic()), api_errors(call, server=server):
                got = client.get(CertificateSigningRequest, name)
            status = got.status
            for cond in (status.conditions if status else None) or []:
                if cond.type in ("Denied", "Failed") and cond.status == "True":
                    raise KubehoistError(
                        f"certificatesigningrequest/{name}: {cond.type}: "
                        f"{cond.message or cond.reason or 'no reason given'}"
                    )
            if status is not None and status.certificate:
                return base64.b64decode(str(status.certificate))
            if time.monotonic() > deadline:
                raise KubehoistError(
                    f"certificatesigningrequest/{name}: approved but not signed after "
                    f"{timeout_s:.0f}s (signer {SIGNER}: is a kube-controller-manager leading, "
                    "with --cluster-signing-cert-file?)"
                )
            sleep(0.2)
    finally:
        with contextlib.suppress(ApiError, KubehoistError):
            client.delete(CertificateSigningRequest, name)


def cluster_ca(client: Client, *, server: str, fallback: bytes | None) -> bytes:
    """The cluster CA bundle: ConfigMap kube-system/kube-root-ca.crt (published by the
    controller manager), else the caller's kubeconfig's."""
    call = Call(verb="get", resource="configmaps", namespace=NAMESPACE, name="kube-root-ca.crt")
    try:
        with api_errors(call, server=server):
            cm = client.get(ConfigMap, "kube-root-ca.crt", namespace=NAMESPACE)
        data = (cm.data or {}).get("ca.crt")
        if data:
            return str(data).encode()
    except NotFoundError:
        pass
    if fallback:
        return fallback
    raise KubehoistError(
        "no cluster CA: configmap kube-system/kube-root-ca.crt has no ca.crt and the "
        "kubeconfig has no certificate-authority data"
    )
