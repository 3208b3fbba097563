"""`kubehoist guard run|install|uninstall`: thin wrappers around `kubehoist.guard`."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from kubehoist import kube
from kubehoist.cli.options import kubeconfig_options, resolve_components
from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.guard import alerts as guardalerts
from kubehoist.guard import credentials, signing
from kubehoist.guard import install as guardinstall
from kubehoist.guard import manifest as guardmanifest
from kubehoist.guard.config import GuardConfig, pod_selectors
from kubehoist.guard.decide import Policy
from kubehoist.guard.loop import Guard
from kubehoist.guard.metrics import GuardMetrics, start_exporter
from kubehoist.guard.nudge import Nudges
from kubehoist.guard.podcache import PodCache
from kubehoist.kube.controlplane import read_control_plane_endpoint
from kubehoist.nodefiles import helperpod
from kubehoist.pivot.phases import control_plane_nodes
from kubehoist.render.kubeconfig import is_loopback


def _component(name: str) -> Component:
    return resolve_components((name,))[0]


@click.group("guard")
def guard() -> None:
    """Bring the static pod back when no controller manager can come back by itself,
    and release the Lease of a leader that is certainly dead."""


@guard.command("run")
@click.option("--component", default="kube-controller-manager", show_default=True)
@click.option(
    "--manifests-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(guardmanifest.MANIFESTS_DIR),
    show_default=True,
    help="This node's kubelet static pod directory.",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="The guard's kubeconfig.")
@click.option("--context", help="The kubeconfig context to use.")
@click.option("--node", envvar="NODE_NAME", help="This node's name (default $NODE_NAME, hostname).")
@click.option("--grace", type=float, default=20.0, show_default=True, help="Seconds.")
@click.option("--settle", type=float, default=30.0, show_default=True, help="Seconds.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per round.")
@click.option(
    "--reaper/--no-reaper",
    default=True,
    show_default=True,
    help="Release the Lease of a leader that is certainly dead.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=guardmanifest.DEFAULT_METRICS_PORT,
    show_default=True,
    help="Port of /metrics (0: none).",
)
@click.option("--metrics-address", default="127.0.0.1", show_default=True)
def run(
    *,
    component: str,
    manifests_dir: Path,
    kubeconfig: str | None,
    context: str | None,
    node: str | None,
    grace: float,
    settle: float,
    interval: float,
    reaper: bool,
    metrics_port: int,
    metrics_address: str,
) -> None:
    """Run the guard on this node until SIGTERM (JSON log lines on stdout)."""
    comp = _component(component)
    try:
        policy = Policy(grace_s=grace, settle_s=settle, reaper=reaper)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not manifests_dir.is_dir():
        raise KubehoistError(f"--manifests-dir {manifests_dir}: no such directory")
    where = kube.target(kubeconfig=kubeconfig, context=context)
    client = kube.connect(where)
    config = GuardConfig(
        component=comp,
        node=node or socket.gethostname(),
        manifests_dir=manifests_dir,
        host_root=(
            Path(guardmanifest.HOST_ROOT) if Path(guardmanifest.HOST_ROOT, "etc").is_dir() else None
        ),
        interval_s=interval,
        policy=policy,
    )
    metrics = GuardMetrics(comp.name, config.node)
    where.log.listeners.append(metrics.api_request)
    metrics.certificate_expires(credentials.client_certificate_not_after(where.config))
    if metrics_port:
        start_exporter(metrics, metrics_port, metrics_address)
    # The Lease's watch starts a round as soon as it changes; the component's pods are
    # kept by watches (one LIST each, then events), which start a round too.
    nudges = Nudges(
        lambda: kube.connect(where),
        namespace=config.namespace,
        selectors=(),
        lease_namespace=comp.lease_namespace,
        lease_name=comp.lease_name,
    ).start()
    pods = PodCache(
        lambda: kube.connect(where),
        namespace=config.namespace,
        selectors=pod_selectors(comp.name),
        wake=nudges.wake,
    ).start()
    guard = Guard(config, client=client, metrics=metrics, server=where.server, pod_cache=pods)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()
        nudges.stop()
        pods.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    guard.run(stop, wake=nudges.wake)


def _kube_options(func: Any) -> Any:
    for opt in reversed(
        [
            kubeconfig_options,
            click.option(
                "--node",
                "nodes",
                multiple=True,
                metavar="NAME",
                help="Only these control-plane nodes (repeatable; default: every node "
                "labelled node-role.kubernetes.io/control-plane).",
            ),
            click.option(
                "--helper-image",
                default=helperpod.DEFAULT_IMAGE,
                show_default=True,
                help="Image of the node-pinned helper pods (a small shell image).",
            ),
            click.option(
                "--timeout", type=float, default=120, show_default=True, help="Seconds per wait."
            ),
        ]
    ):
        func = opt(func)
    return func


def _nodes(client: Any, nodes: tuple[str, ...], *, server: str) -> tuple[tuple[str, ...], bool]:
    """(the nodes to act on, whether that is every control-plane node)."""
    with kube.api_errors(kube.Call(verb="list", resource="nodes"), server=server):
        every = control_plane_nodes(client)
    if not every and not nodes:
        raise KubehoistError(
            "no control-plane nodes (no node is labelled node-role.kubernetes.io/control-plane); "
            "pass --node"
        )
    unknown = [n for n in nodes if n not in every]
    if unknown:
        raise UsageError(
            f"--node {unknown[0]}: not a control-plane node (control-plane nodes: "
            f"{', '.join(every) or 'none'})"
        )
    chosen = tuple(nodes) or tuple(every)
    return chosen, set(chosen) >= set(every)


def _ca_fallback(where: kube.Target) -> bytes | None:
    cluster = where.config.cluster
    if cluster.certificate_auth_data:
        return base64.b64decode(cluster.certificate_auth_data)
    if cluster.certificate_auth:
        try:
            return Path(cluster.certificate_auth).read_bytes()
        except OSError:
            return None
    return None


@guard.command("install")
@click.option("--component", default="kube-controller-manager", show_default=True)
@_kube_options
@click.option(
    "--manifests-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="On one control-plane node: only write the guard's static pod into this directory "
    "(RBAC and /etc/kubernetes/kubehoist/guard.conf are then yours to provide).",
)
@click.option("--image", default=guardmanifest.DEFAULT_IMAGE, show_default=True)
@click.option(
    "--server",
    help="API endpoint in the guards' kubeconfig (default: kubeadm's controlPlaneEndpoint, "
    "else the kubeconfig's server).",
)
@click.option("--grace", type=float, help="The guards' --grace (seconds).")
@click.option("--settle", type=float, help="The guards' --settle (seconds).")
@click.option("--reaper/--no-reaper", default=True, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=guardmanifest.DEFAULT_METRICS_PORT,
    show_default=True,
)
@click.option(
    "--cert-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Validity of the guards' client certificates (the signer may cap it).",
)
@click.option(
    "--issuer",
    type=click.Choice(["auto", "node", "csr"]),
    default="auto",
    show_default=True,
    help="Who signs the guards' certificates: each node with its own "
    "/etc/kubernetes/pki/ca.key (in a helper pod of --image; needs no controller manager), "
    "the cluster's signer through a CertificateSigningRequest (needs a leading controller "
    "manager), or the node where it holds a CA key and the signer elsewhere.",
)
@click.option("--no-wait", is_flag=True, help="Do not wait for the guards to be Ready.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option(
    "--print", "print_only", is_flag=True, help="Print the manifest and the RBAC; change nothing."
)
def install(
    *,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    nodes: tuple[str, ...],
    helper_image: str,
    timeout: float,
    manifests_dir: Path | None,
    image: str,
    server: str | None,
    grace: float | None,
    settle: float | None,
    reaper: bool,
    metrics_port: int,
    cert_days: int,
    issuer: str,
    no_wait: bool,
    dry_run: bool,
    print_only: bool,
) -> None:
    """Put the guard's static pod on every control-plane node, with its own client
    certificate and its minimal RBAC. Run it again to renew the certificates."""
    comp = _component(component)
    if grace is not None:
        try:
            Policy(grace_s=grace)
        except ValueError as exc:
            raise UsageError(f"--grace: {exc}") from None
    pod = guardmanifest.static_pod(
        comp,
        image=image,
        metrics_port=metrics_port,
        grace_s=grace,
        settle_s=settle,
        reaper=reaper,
    )
    if print_only:
        docs = [pod, *guardmanifest.rbac(comp)]
        click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
        return
    if manifests_dir is not None:
        if not manifests_dir.is_dir():
            raise KubehoistError(f"--manifests-dir {manifests_dir}: no such directory")
        target = manifests_dir / f"{guardmanifest.pod_name(comp)}.yaml"
        if dry_run:
            click.echo(f"would write {target}")
            return
        tmp = target.with_name(f".{target.name}.kubehoist-tmp")
        tmp.write_text(yaml.safe_dump(pod, sort_keys=False))
        os.replace(tmp, target)
        click.echo(f"wrote {target}")
        return
    where = kube.target(kubeconfig=kubeconfig, context=context)
    client = kube.session(where, retry_for_s=timeout)
    chosen, _ = _nodes(client, nodes, server=where.server)
    endpoint = server
    if endpoint is None:
        endpoint, _source, _warnings = read_control_plane_endpoint(client, server=where.server)
    endpoint = endpoint or where.server
    if is_loopback(endpoint):
        raise UsageError(
            f"the guards would reach the API server at {endpoint}, a loopback address: pass "
            "--server with the cluster's API endpoint"
        )
    options = guardinstall.InstallOptions(
        component=comp,
        nodes=chosen,
        server=endpoint,
        ca_pem=b"",
        image=image,
        helper_image=helper_image,
        grace_s=grace,
        settle_s=settle,
        reaper=reaper,
        metrics_port=metrics_port,
        validity_s=cert_days * 86400,
        timeout_s=timeout,
        issuer=issuer,
    )
    if dry_run:
        for line in guardinstall.plan_install(options):
            click.echo(f"(dry run) {line}")
        return
    if issuer != "node":
        ca = signing.cluster_ca(client, server=where.server, fallback=_ca_fallback(where))
        options = replace(options, ca_pem=ca)
    guardinstall.install(client, options, server=where.server, say=click.echo, wait=not no_wait)


@guard.command("uninstall")
@click.option("--component", default="kube-controller-manager", show_default=True)
@_kube_options
@click.option(
    "--manifests-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="On one control-plane node: only remove the guard's static pod from this directory.",
)
def uninstall(
    *,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    nodes: tuple[str, ...],
    helper_image: str,
    timeout: float,
    manifests_dir: Path | None,
) -> None:
    """Remove the guard from every control-plane node, then its RBAC and its Lease.
    A fallback static pod the guard put in place is left running."""
    comp = _component(component)
    if manifests_dir is not None:
        target = manifests_dir / f"{guardmanifest.pod_name(comp)}.yaml"
        if target.exists():
            target.unlink()
            click.echo(f"removed {target}")
        else:
            click.echo(f"{target}: not installed")
        return
    where = kube.target(kubeconfig=kubeconfig, context=context)
    client = kube.session(where, retry_for_s=timeout)
    chosen, everywhere = _nodes(client, nodes, server=where.server)
    guardinstall.uninstall(
        client,
        comp,
        chosen,
        helper_image=helper_image,
        server=where.server,
        say=click.echo,
        everywhere=everywhere,
        timeout_s=timeout,
    )


@guard.command("alerts")
@click.option(
    "--prometheus-rule",
    is_flag=True,
    help="A PrometheusRule (monitoring.coreos.com/v1) instead of a plain rules file.",
)
@click.option(
    "--namespace",
    default=guardalerts.PROMETHEUS_RULE_NAMESPACE,
    show_default=True,
    help="The PrometheusRule's namespace.",
)
def alerts(*, prometheus_rule: bool, namespace: str) -> None:
    """Print the Prometheus alerting rules for the guards' metrics (docs/alerts.md)."""
    doc = guardalerts.prometheus_rule(namespace) if prometheus_rule else guardalerts.rules_file()
    click.echo(guardalerts.dump(doc), nl=False)


@guard.command("node-setup", hidden=True)
@click.option("--node", required=True)
@click.option("--server", required=True)
@click.option("--days", type=click.IntRange(1, 3650), default=365)
@click.option(
    "--etc-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/kubernetes"),
    show_default=True,
)
@click.option("--manifest-name", required=True)
@click.option("--manifest-b64", required=True)
def node_setup(
    *, node: str, server: str, days: int, etc_dir: Path, manifest_name: str, manifest_b64: str
) -> None:
    """On a control-plane node (run by `guard install` in a node-pinned helper pod): sign
    the guard's certificate with the node's CA, write guard.conf and the manifest."""
    try:
        manifest_text = base64.b64decode(manifest_b64, validate=True).decode()
    except ValueError:
        raise UsageError("--manifest-b64: not base64 text") from None
    try:
        result = credentials.node_setup(
            etc_dir,
            node=node,
            server=server,
            days=days,
            manifest_name=manifest_name,
            manifest_text=manifest_text,
            now=datetime.now(UTC),
        )
    except KubehoistError as exc:
        _termination_message(exc.message)
        raise
    _termination_message(result)
    click.echo(result)


def _termination_message(text: str) -> None:
    """Where a kubelet reads a container's termination message, when there is one."""
    path = Path("/dev/termination-log")
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(text[:4000] + "\n")


command = guard
