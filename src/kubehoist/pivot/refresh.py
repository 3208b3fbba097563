"""`credentials refresh`: the Deployment's credentials Secret made again from the
node's files (after `kubeadm certs renew`), and the Deployment rolled onto it.

The Secret is made by the same mechanism as pivot's: the static pod manifest (the
parked one, after a pivot) is rendered with the node's files (`hostfiles` ->
`render`), and the rendered Secret is server-side applied as pivot applies it. Only
what the new credentials change is touched: the Secret's data and the pod template's
`kubehoist.io/credentials-sha256` annotation, which render computes over the same
files, so the Deployment rolls and its new pods read the new files. The hand-over
during the roll is the existing one (the release gate where it is on, the guard's
reaper, else the lease duration).

Nothing half-changed: every file is read and checked (present, parses, not expired)
and the new Secret must have the keys of the old one before anything is written; if
the Deployment cannot be patched after the Secret was applied, the old Secret data is
put back.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret

from kubehoist import certexpiry, hostfiles
from kubehoist.components import Component, FileRole
from kubehoist.constants import (
    CREDENTIALS_SHA256_ANNOTATION,
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
)
from kubehoist.errors import KubehoistError
from kubehoist.kube import leases
from kubehoist.kube.client import get_or_none
from kubehoist.manifest import StaticPod, load_static_pod
from kubehoist.nodefiles.parking import PARK_DIR
from kubehoist.pivot import phases
from kubehoist.render import RenderOptions, render
from kubehoist.render import kubeconfig as kubeconfig_model
from kubehoist.render.credentials import sniff_role

NAMESPACE = phases.NAMESPACE


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a refresh will write, decided before anything is written."""

    deployment: str
    secret: str
    old_data: Mapping[str, str]
    """The Secret's data now (base64), to put back if the roll cannot be started."""
    new_secret: Mapping[str, Any]
    """The rendered Secret, as pivot applies it."""
    old_sha256: str | None
    new_sha256: str
    changed_keys: tuple[str, ...]
    certs_before: tuple[certexpiry.ClientCert, ...]
    certs_after: tuple[certexpiry.ClientCert, ...]
    warnings: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.changed_keys and self.old_sha256 == self.new_sha256


def manifest_path(component: Component, host_root: Path, manifest: Path | None) -> Path:
    """The static pod manifest to render from: `-f`, else the parked one (a pivoted
    node), else the one in the kubelet's manifests directory."""
    if manifest is not None:
        if not manifest.is_file():
            raise KubehoistError(f"{manifest}: no such manifest")
        return manifest
    parked = host_root / PARK_DIR.lstrip("/") / f"{component.name}.yaml"
    live = host_root / "etc/kubernetes/manifests" / f"{component.name}.yaml"
    for path in (parked, live):
        if path.is_file():
            return path
    raise KubehoistError(
        f"no {component.name} manifest under {host_root}: neither {parked} nor {live} "
        "(pass --host-root or -f)"
    )


def _secret_name(dep: Deployment, component: Component) -> str:
    meta = dep.metadata
    labels = (meta.labels if meta else None) or {}
    where = f"Deployment {NAMESPACE}/{component.name}"
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        raise KubehoistError(f"{where}: not kubehoist's (label {MANAGED_BY_LABEL} missing)")
    name = certexpiry.secret_name(dep.to_dict())
    if name is None:
        raise KubehoistError(
            f"{where}: no credentials Secret mounted (image mode?): nothing to refresh"
        )
    return name


def _decoded(data: Mapping[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


def _kept_server(files: Mapping[str, bytes]) -> str | None:
    """The one server the Secret's kubeconfigs use now (pivot's choice, --server or the
    control-plane endpoint), so that a refresh keeps it; None when not one."""
    servers: set[str] = set()
    for key, data in files.items():
        if sniff_role(data) is not FileRole.KUBECONFIG:
            continue
        doc = kubeconfig_model.load(data, name=f"Secret key {key}")
        servers.update(kubeconfig_model.servers(doc))
    return servers.pop() if len(servers) == 1 else None


def plan(
    client: Client,
    component: Component,
    *,
    pod: StaticPod,
    host_root: Path,
    now: datetime,
) -> Plan:
    """Read the cluster and the node's files; decide. Writes nothing."""
    dep = get_or_none(client, Deployment, component.name, namespace=NAMESPACE)
    if dep is None:
        raise KubehoistError(
            f"Deployment {NAMESPACE}/{component.name} not found: {component.name} is not "
            "pivoted, its static pods read the node's files directly"
        )
    name = _secret_name(dep, component)
    old = get_or_none(client, Secret, name, namespace=NAMESPACE)
    if old is None:
        raise KubehoistError(f"Secret {NAMESPACE}/{name}, which the Deployment mounts, not found")
    old_data = dict(old.data or {})
    old_files = _decoded(old_data)
    options = RenderOptions(
        now=now,
        secret_name=name,
        server=_kept_server(old_files),
        replicas=int(dep.spec.replicas or 1) if dep.spec else 1,
    )
    rendered = render(pod, options, hostfiles.gather_inputs(pod, options, host_root=host_root))
    [new_secret] = [o for o in rendered.objects if o.get("kind") == "Secret"]
    [new_dep] = [o for o in rendered.objects if o.get("kind") == "Deployment"]
    new_data: dict[str, str] = dict(new_secret["data"])
    if set(new_data) != set(old_data):
        raise KubehoistError(
            f"Secret {NAMESPACE}/{name}: the node's files give the keys "
            f"{', '.join(sorted(new_data))}, the Secret holds {', '.join(sorted(old_data))}: "
            f"the manifest's files changed; pivot again instead"
        )
    new_sha = new_dep["spec"]["template"]["metadata"]["annotations"][CREDENTIALS_SHA256_ANNOTATION]
    template = dep.spec.template.metadata if dep.spec and dep.spec.template else None
    old_sha = ((template.annotations if template else None) or {}).get(
        CREDENTIALS_SHA256_ANNOTATION
    )
    before, _ = certexpiry.client_certs(old_files)
    after, _ = certexpiry.client_certs(_decoded(new_data))
    return Plan(
        deployment=component.name,
        secret=name,
        old_data=old_data,
        new_secret=new_secret,
        old_sha256=old_sha,
        new_sha256=new_sha,
        changed_keys=tuple(sorted(k for k in new_data if new_data[k] != old_data[k])),
        certs_before=before,
        certs_after=after,
        warnings=rendered.warnings,
    )


def apply(client: Client, p: Plan) -> None:
    """Apply the new Secret, then roll the Deployment onto it; on a failure of the
    roll, the old Secret data is put back."""
    phases.apply_objects(client, [p.new_secret])
    patch = {
        "spec": {
            "template": {"metadata": {"annotations": {CREDENTIALS_SHA256_ANNOTATION: p.new_sha256}}}
        }
    }
    try:
        client.patch(
            Deployment, p.deployment, patch, namespace=NAMESPACE, field_manager=FIELD_MANAGER
        )
    except ApiError as exc:
        old = {**p.new_secret, "data": dict(p.old_data)}
        phases.apply_objects(client, [old])
        raise KubehoistError(
            f"Deployment {NAMESPACE}/{p.deployment}: cannot roll it ({exc.status.message}); "
            f"Secret {NAMESPACE}/{p.secret} put back as it was"
        ) from None


def desired_replicas(dep: Deployment) -> int:
    """PURE: the replicas a Deployment asks for (1 when unset, as the API defaults it)."""
    return int(dep.spec.replicas or 1) if dep.spec else 1


def rolled_out(dep: Deployment) -> bool:
    """PURE: whether a Deployment's rollout is complete: its controller saw the latest
    generation and every replica runs the new template and is Ready, none of the old."""
    st, meta = dep.status, dep.metadata
    want = desired_replicas(dep)
    return bool(
        st
        and meta
        and (st.observedGeneration or 0) >= (meta.generation or 0)
        and (st.updatedReplicas or 0) == want
        and (st.readyReplicas or 0) == want
        and (st.replicas or 0) == want
    )


def wait_rolled(
    client: Client, component: Component, *, timeout: float, line: Callable[[str], None]
) -> str:
    """Wait until every replica runs the new template, no pod of an older one is left
    (terminating pods included: one may still be running on the old credentials), and
    a pod of it leads."""

    def rolled() -> bool:
        dep = client.get(Deployment, component.name, namespace=NAMESPACE)
        if not rolled_out(dep):
            return False  # the pods are listed only once the rollout is complete
        every = phases.deployment_pods(client, component.name, terminating=True)
        return len(every) <= desired_replicas(dep)

    took = leases.wait_until(
        f"Deployment {NAMESPACE}/{component.name} to roll", rolled, timeout=timeout, interval=0.5
    )
    line(f"rolled in {took:.1f}s")
    leader: list[str] = []

    def leads() -> bool:
        view = leases.read_lease(
            client, namespace=component.lease_namespace, name=component.lease_name
        )
        names = {
            p.metadata.name
            for p in phases.deployment_pods(client, component.name)
            if p.metadata and p.metadata.name
        }
        if view.holder and leases.holder_node(view.holder) in names:
            leader.append(view.holder)
            return True
        return False

    leases.wait_until("a pod of the Deployment to lead", leads, timeout=timeout)
    return leader[-1]


def content_sha256(data: Mapping[str, str]) -> str:
    """sha256 over a Secret's (key, content): what render's annotation is computed as."""
    h = hashlib.sha256()
    for key in sorted(data):
        h.update(key.encode() + b"\0" + hashlib.sha256(base64.b64decode(data[key])).digest())
    return h.hexdigest()


def load_pod(path: Path, component: Component) -> StaticPod:
    pod = load_static_pod(path.read_text(), source=str(path))
    if pod.component.name != component.name:
        raise KubehoistError(f"{path}: a {pod.component.name} manifest, not {component.name}")
    return pod
