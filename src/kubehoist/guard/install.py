"""`guard install` / `guard uninstall` on every control-plane node.

Install, in order (each step idempotent, so a run that failed half-way is simply run
again):

1. the guard's Role and RoleBinding (server-side apply);
2. per node, the guard's client certificate (user `kubehoist:guard:<node>`, group
   `kubehoist:guards`) and its static pod manifest, by one of two issuers (see
   `guard.credentials`): on the node itself, in a node-pinned helper pod of the guard's
   image that signs with the node's CA key and writes `guard.conf` and the manifest
   (no controller manager needed, no key leaves the node); or through a
   CertificateSigningRequest signed by the controller manager, the kubeconfigs then
   carried to shell helpers by a short-lived Secret (deleted when they are done, also
   on failure);
3. wait until every node's guard pod is Ready and one guard holds the guards' Lease.

Uninstall removes the manifest on every node (and `guard.conf` once no guard of any
component is left there), waits for the guard pods to stop, then deletes the RBAC and
the guards' Lease. A fallback static pod the guard put in place is left running, and
said so.
"""

from __future__ import annotations

import base64
import contextlib
import posixpath
import secrets
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from lightkube import Client, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from kubehoist.components import Component
from kubehoist.constants import FIELD_MANAGER, guard_lease_name, object_labels
from kubehoist.errors import KubehoistError
from kubehoist.guard import manifest as guardmanifest
from kubehoist.guard.credentials import (
    NO_CA_KEY_EXIT,
    guard_user,
    kubeconfig_text,
    new_key_and_csr,
)
from kubehoist.guard.signing import SIGNER, issue_certificate
from kubehoist.kube import retry
from kubehoist.kube.errors import Call, NotFoundError, api_errors, transient
from kubehoist.kube.objects import is_ready
from kubehoist.nodefiles import helperpod
from kubehoist.nodefiles.scripts import HOST_MOUNT, host_path

INPUT_MOUNT = "/kubehoist-input"
NAMESPACE = "kube-system"
DEFAULT_VALIDITY_S = 365 * 24 * 3600


# --- pure pieces -----------------------------------------------------------------------


def install_script(node_key: str, manifest_name: str) -> str:
    """POSIX shell for the helper: guard.conf first (0600), then the manifest, each
    through a temporary file and a rename. Prints `installed <sha256 of manifest>`."""
    q = shlex.quote
    conf = host_path(guardmanifest.KUBECONFIG)
    dst = host_path(posixpath.join(guardmanifest.MANIFESTS_DIR, manifest_name))
    tmp = host_path(posixpath.join(guardmanifest.MANIFESTS_DIR, f".{manifest_name}.kubehoist-tmp"))
    return f"""set -eu
umask 077
msg=/dev/termination-log
conf={q(conf)}; dst={q(dst)}; tmp={q(tmp)}
mkdir -p "$(dirname "$conf")" "$(dirname "$dst")"
cp {q(posixpath.join(INPUT_MOUNT, node_key))} "$conf.tmp"
chmod 600 "$conf.tmp"
mv "$conf.tmp" "$conf"
cp {q(posixpath.join(INPUT_MOUNT, "manifest.yaml"))} "$tmp"
chmod 600 "$tmp"
mv "$tmp" "$dst"
echo "installed $(sha256sum "$dst" | cut -d' ' -f1)" > $msg
"""


def uninstall_script(manifest_name: str, marker_name: str) -> str:
    """POSIX shell: remove the guard's manifest; remove guard.conf once no guard
    manifest of any component is left; say whether a guard's fallback is in place."""
    q = shlex.quote
    conf = host_path(guardmanifest.KUBECONFIG)
    manifests = host_path(guardmanifest.MANIFESTS_DIR)
    marker = host_path(posixpath.join(guardmanifest.STATE_DIR, "guard", marker_name))
    return f"""set -eu
msg=/dev/termination-log
manifests={q(manifests)}; conf={q(conf)}
state=removed
[ -f "$manifests/"{q(manifest_name)} ] || state=absent
rm -f "$manifests/"{q(manifest_name)}
left=$(ls "$manifests" 2>/dev/null | grep -c '^kubehoist-guard-.*\\.yaml$' || true)
[ "$left" != 0 ] || rm -f "$conf"
fb=no
[ ! -f {q(marker)} ] || fb=fallback-in-place
echo "$state $fb" > $msg
"""


# --- the cluster side ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InstallOptions:
    component: Component
    nodes: tuple[str, ...]
    server: str
    ca_pem: bytes
    image: str = guardmanifest.DEFAULT_IMAGE
    helper_image: str = helperpod.DEFAULT_IMAGE
    grace_s: float | None = None
    settle_s: float | None = None
    reaper: bool = True
    metrics_port: int = guardmanifest.DEFAULT_METRICS_PORT
    validity_s: int = DEFAULT_VALIDITY_S
    timeout_s: float = 120.0
    issuer: str = "auto"
    """`node` (the node's CA, in a helper pod of the guard's image), `csr` (the
    cluster's signer, needs a leading controller manager), `auto` (node, else csr)."""


def _helper_failed(node: str, what: str, out: helperpod.HelperOutcome) -> KubehoistError:
    return KubehoistError(
        f"node {node}: {what} failed (exit {out.exit_code}): {out.message or 'no message'}"
    )


def guard_pod(options: InstallOptions) -> dict[str, Any]:
    return guardmanifest.static_pod(
        options.component,
        image=options.image,
        metrics_port=options.metrics_port,
        grace_s=options.grace_s,
        settle_s=options.settle_s,
        reaper=options.reaper,
    )


def plan_install(options: InstallOptions) -> list[str]:
    """What `install` would do, one line each (for --dry-run)."""
    c = options.component
    name = guardmanifest.pod_name(c)
    lines = [f"server-side apply Role and RoleBinding {NAMESPACE}/kubehoist:guard:{c.name}"]
    for node in options.nodes:
        how = {
            "node": "signed on the node with its /etc/kubernetes/pki/ca.key",
            "csr": f"a CertificateSigningRequest to {SIGNER}",
            "auto": "signed on the node with its CA key, else a CertificateSigningRequest",
        }[options.issuer]
        lines.append(
            f"node/{node}: a client certificate for {guard_user(node)} ({how}, "
            f"{options.validity_s // 86400} days) -> {guardmanifest.KUBECONFIG} (server "
            f"{options.server})"
        )
        lines.append(f"node/{node}: write {guardmanifest.MANIFESTS_DIR}/{name}.yaml")
    lines.append(
        f"wait for the guard pods to be Ready and for one to hold Lease "
        f"{NAMESPACE}/{guard_lease_name(c.name)}"
    )
    return lines


def apply_rbac(client: Client, component: Component, *, server: str) -> list[str]:
    done = []
    for obj in guardmanifest.rbac(component, namespace=NAMESPACE):
        meta = obj["metadata"]
        call = Call(
            verb="patch", resource=f"{obj['kind'].lower()}s", namespace=NAMESPACE, name=meta["name"]
        )
        with api_errors(call, server=server):
            client.apply(codecs.from_dict(dict(obj)), field_manager=FIELD_MANAGER, force=True)
        done.append(f"{obj['kind'].lower()}.rbac.authorization.k8s.io/{meta['name']}")
    return done


def _secret(run: str, confs: Mapping[str, str], manifest_text: str, component: str) -> Secret:
    data = {key: base64.b64encode(text.encode()).decode() for key, text in confs.items()}
    data["manifest.yaml"] = base64.b64encode(manifest_text.encode()).decode()
    return Secret(
        metadata=ObjectMeta(
            name=f"kubehoist-guard-install-{run}",
            namespace=NAMESPACE,
            labels=object_labels(component),
        ),
        type="Opaque",
        data=data,
    )


def node_key(node: str) -> str:
    """A Secret key for a node's kubeconfig (node names are DNS subdomains: valid keys)."""
    return f"{node}.conf"


def node_setup_command(node: str, options: InstallOptions, manifest_text: str) -> list[str]:
    """The helper's argv: `kubehoist guard node-setup` in the guard's own image."""
    return [
        "kubehoist", "guard", "node-setup",
        "--node", node,
        "--server", options.server,
        "--days", str(max(1, options.validity_s // 86400)),
        "--etc-dir", HOST_MOUNT,
        "--manifest-name", f"{guardmanifest.pod_name(options.component)}.yaml",
        "--manifest-b64", base64.b64encode(manifest_text.encode()).decode(),
    ]  # fmt: skip


def install(
    client: Client,
    options: InstallOptions,
    *,
    server: str,
    say: Callable[[str], None],
    wait: bool = True,
) -> None:
    c = options.component
    for line in apply_rbac(client, c, server=server):
        say(f"{line} serverside-applied")
    manifest_text = yaml.safe_dump(guard_pod(options), sort_keys=False)
    done: dict[str, str] = {}
    by_csr: list[str] = list(options.nodes) if options.issuer == "csr" else []
    if options.issuer in ("node", "auto"):
        call = Call(verb="create", resource="pods", namespace=NAMESPACE)
        with api_errors(call, server=server):
            outs = helperpod.run_scripts(
                client,
                {n: node_setup_command(n, options, manifest_text) for n in options.nodes},
                image=options.image,
                component=c.name,
                namespace=NAMESPACE,
                timeout=options.timeout_s,
            )
        for node in options.nodes:
            out = outs[node]
            words = out.message.split()
            if out.exit_code == 0:
                until = words[1][:10] if len(words) > 1 and words[0] == "installed" else "?"
                done[node] = f"signed on the node, expires {until}"
            elif out.exit_code == NO_CA_KEY_EXIT and options.issuer == "auto":
                by_csr.append(node)
            else:
                raise _helper_failed(node, "guard node-setup", out)
    if by_csr:
        done.update(_install_by_csr(client, options, by_csr, manifest_text, server=server))
    for node in options.nodes:
        say(
            f"node/{node}: guard {guardmanifest.pod_name(c)} installed "
            f"({guard_user(node)}, {done[node]})"
        )
    if wait:
        waited = wait_installed(
            client, c, options.nodes, server=server, timeout_s=options.timeout_s
        )
        say(f"guards Ready on {len(options.nodes)} node(s); {waited}")


def _install_by_csr(
    client: Client,
    options: InstallOptions,
    nodes: Sequence[str],
    manifest_text: str,
    *,
    server: str,
) -> dict[str, str]:
    """The CSR issuer: keys made here, certificates from the cluster's signer, written
    by shell helpers through a short-lived Secret (deleted also on failure)."""
    c = options.component
    confs: dict[str, str] = {}
    done: dict[str, str] = {}
    for node in nodes:
        key_pem, csr_pem = new_key_and_csr(node)
        cert_pem = issue_certificate(
            client,
            node=node,
            csr_pem=csr_pem,
            validity_s=options.validity_s,
            server=server,
            timeout_s=min(60.0, options.timeout_s),
        )
        cert = x509.load_pem_x509_certificate(cert_pem)
        done[node] = f"signed by {SIGNER}, expires {cert.not_valid_after_utc:%Y-%m-%d}"
        confs[node_key(node)] = kubeconfig_text(
            server=options.server,
            ca_pem=options.ca_pem,
            cert_pem=cert_pem,
            key_pem=key_pem,
            user=guard_user(node),
        )
    manifest_name = f"{guardmanifest.pod_name(c)}.yaml"
    secret = _secret(secrets.token_hex(4), confs, manifest_text, c.name)
    assert secret.metadata is not None and secret.metadata.name is not None
    secret_name = secret.metadata.name
    call = Call(verb="create", resource="secrets", namespace=NAMESPACE, name=secret_name)
    try:
        with api_errors(call, server=server):
            client.create(secret)
        call = Call(verb="create", resource="pods", namespace=NAMESPACE)
        with api_errors(call, server=server):
            outs = helperpod.run_scripts(
                client,
                {n: install_script(node_key(n), manifest_name) for n in nodes},
                image=options.helper_image,
                component=c.name,
                namespace=NAMESPACE,
                timeout=options.timeout_s,
                secret=secret_name,
                secret_mount=INPUT_MOUNT,
            )
    finally:
        with contextlib.suppress(ApiError, KubehoistError):
            client.delete(Secret, secret_name, namespace=NAMESPACE)
    for node in nodes:
        if outs[node].exit_code != 0:
            raise _helper_failed(node, "writing the guard", outs[node])
    return done


def _guard_pods(client: Client, component: Component, *, server: str) -> dict[str, Pod]:
    """The guards' mirror pods by node: one label-selected LIST."""
    labels: dict[str, Any] = {"app.kubernetes.io/name": guardmanifest.pod_name(component)}
    call = Call(verb="list", resource="pods", namespace=NAMESPACE)
    with api_errors(call, server=server):
        found = client.list(Pod, namespace=NAMESPACE, labels=labels)
        return {p.spec.nodeName: p for p in found if p.spec and p.spec.nodeName}


def wait_installed(
    client: Client, component: Component, nodes: Sequence[str], *, server: str, timeout_s: float
) -> str:
    """Until every node's guard mirror pod is Ready and a guard holds the guards' Lease."""
    name = guardmanifest.pod_name(component)
    lease_name = guard_lease_name(component.name)
    deadline = time.monotonic() + timeout_s
    with retry.within(timeout_s):
        while True:
            try:
                missing, holder = _installed(client, component, nodes, server=server)
                if not missing and holder:
                    return f"the guards' Lease {NAMESPACE}/{lease_name} is held by {holder}"
                what = (
                    f"guard pods not Ready on {', '.join(missing)}"
                    if missing
                    else f"no guard holds Lease {NAMESPACE}/{lease_name}"
                )
            except KubehoistError as exc:
                if not transient(exc):
                    raise
                what = exc.message  # the API server is away: keep waiting
            if time.monotonic() > deadline:
                raise KubehoistError(
                    f"timed out after {timeout_s:.0f}s: {what} (see `kubectl -n {NAMESPACE} "
                    f"logs {name}-<node>`)"
                )
            time.sleep(0.5)


def _installed(
    client: Client, component: Component, nodes: Sequence[str], *, server: str
) -> tuple[list[str], str]:
    """(nodes whose guard pod is not Ready, the holder of the guards' Lease or "")."""
    pods = _guard_pods(client, component, server=server)
    missing = [n for n in nodes if n not in pods or not is_ready(pods[n])]
    lease_name = guard_lease_name(component.name)
    try:
        call = Call(verb="get", resource="leases", namespace=NAMESPACE, name=lease_name)
        with api_errors(call, server=server):
            lease = client.get(Lease, lease_name, namespace=NAMESPACE)
        holder = (lease.spec.holderIdentity if lease.spec else "") or ""
    except NotFoundError:
        holder = ""
    return missing, holder


def uninstall(
    client: Client,
    component: Component,
    nodes: Sequence[str],
    *,
    helper_image: str,
    server: str,
    say: Callable[[str], None],
    everywhere: bool,
    timeout_s: float = 120.0,
) -> None:
    manifest_name = f"{guardmanifest.pod_name(component)}.yaml"
    marker_name = f"{component.name}.yaml.fallback.json"
    call = Call(verb="create", resource="pods", namespace=NAMESPACE)
    with api_errors(call, server=server):
        outs = helperpod.run_scripts(
            client,
            {n: uninstall_script(manifest_name, marker_name) for n in nodes},
            image=helper_image,
            component=component.name,
            namespace=NAMESPACE,
            timeout=timeout_s,
        )
    for node in nodes:
        out = outs[node]
        if out.exit_code != 0:
            raise _helper_failed(node, "removing the guard", out)
        words = out.message.split()
        state = words[0] if words else "removed"
        line = f"node/{node}: guard {guardmanifest.pod_name(component)} " + (
            "removed" if state != "absent" else "was not installed"
        )
        if len(words) > 1 and words[1] == "fallback-in-place":
            line += (
                f"; the guard's fallback static {component.name} stays in place on this node "
                "(run `kubehoist pivot` to park it again, or `kubehoist rollback`)"
            )
        say(line)
    if not everywhere:
        return
    # The guards stop before their RBAC goes (else they log refused reads on the way out).
    deadline = time.monotonic() + timeout_s

    def running() -> list[str]:
        try:
            pods = _guard_pods(client, component, server=server)
        except KubehoistError as exc:
            if not transient(exc):
                raise
            return list(nodes)  # unknown while the API server is away: not gone yet
        return [n for n in nodes if n in pods]

    with retry.within(timeout_s):
        while (left := running()) and time.monotonic() < deadline:
            time.sleep(0.5)
    if left:
        say(f"guard pods still running on {', '.join(left)}; removing their RBAC anyway")
    for kind, name in (
        (RoleBinding, f"kubehoist:guard:{component.name}"),
        (Role, f"kubehoist:guard:{component.name}"),
        (Lease, guard_lease_name(component.name)),
    ):
        plural = f"{kind.__name__.lower()}s"
        try:
            with api_errors(
                Call(verb="delete", resource=plural, namespace=NAMESPACE, name=name), server=server
            ):
                client.delete(kind, name, namespace=NAMESPACE)
            say(f"{kind.__name__.lower()}/{name} deleted")
        except NotFoundError:
            pass
