"""`kubehoist guard run|install|uninstall`: thin wrappers around `kubehoist.guard`."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click
import yaml

from kubehoist import kube
from kubehoist.cli.options import resolve_components
from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.guard import manifest as guardmanifest
from kubehoist.guard.decide import Policy
from kubehoist.guard.loop import Guard, GuardConfig, GuardMetrics


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
        interval_s=interval,
        policy=policy,
    )
    metrics = GuardMetrics(comp.name)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_address, registry=metrics.registry)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Guard(config, client=client, metrics=metrics, server=where.server).run(stop)


@guard.command("install")
@click.option("--component", default="kube-controller-manager", show_default=True)
@click.option(
    "--manifests-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="On a control-plane node: write the guard's static pod into this directory.",
)
@click.option("--image", default=guardmanifest.DEFAULT_IMAGE, show_default=True)
@click.option(
    "--print", "print_only", is_flag=True, help="Print the manifest and the RBAC; change nothing."
)
def install(*, component: str, manifests_dir: Path | None, image: str, print_only: bool) -> None:
    """Put the guard's static pod on control-plane nodes, with its minimal RBAC."""
    comp = _component(component)
    pod = guardmanifest.static_pod(comp, image=image)
    docs = [pod, *guardmanifest.rbac(comp)]
    if print_only:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
        return
    if manifests_dir is None:
        raise KubehoistError(
            "guard install on every node (helper pods, RBAC, the guard's certificate) is "
            "not there yet: on each control-plane node run `kubehoist guard install "
            "--manifests-dir /etc/kubernetes/manifests`, apply `kubehoist guard install "
            "--print` RBAC, and provide /etc/kubernetes/kubehoist/guard.conf"
        )
    target = manifests_dir / f"{guardmanifest.pod_name(comp)}.yaml"
    tmp = target.with_name(f".{target.name}.kubehoist-tmp")
    tmp.write_text(yaml.safe_dump(pod, sort_keys=False))
    os.replace(tmp, target)
    click.echo(f"wrote {target}")


@guard.command("uninstall")
@click.option("--component", default="kube-controller-manager", show_default=True)
@click.option(
    "--manifests-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="On a control-plane node: remove the guard's static pod from this directory.",
)
def uninstall(*, component: str, manifests_dir: Path | None) -> None:
    """Remove the guard's static pod (on this node with --manifests-dir)."""
    comp = _component(component)
    if manifests_dir is None:
        raise KubehoistError(
            "guard uninstall on every node is not there yet: run it with --manifests-dir "
            "on each control-plane node"
        )
    target = manifests_dir / f"{guardmanifest.pod_name(comp)}.yaml"
    if target.exists():
        target.unlink()
        click.echo(f"removed {target}")
    else:
        click.echo(f"{target}: not installed")


command = guard
