"""`kubehoist lab logs`, `kubehoist lab exec` and `kubehoist lab image …`: a node's
daemons' logs (its journal), a command run on a node, and the lab's images (built
from a Dockerfile of the article's shape, imported into every node's containerd).

Pods' logs are `kubectl logs`' business: the kube-apiserver reaches every kubelet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from kubehoist.cli.options import prog
from kubehoist.errors import KubehoistError
from kubehoist.lab import binaries as binmod
from kubehoist.lab import dockerfile as labdockerfile
from kubehoist.lab import images, nodeconfig
from kubehoist.lab import node as labnode
from kubehoist.lab import spec as specmod
from kubehoist.lab.spec import LabNode, LabSpec


def _root_option(f: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KUBEHOIST_LAB_ROOT",
        default=specmod.DEFAULT_ROOT,
        help="Lab root directory [env KUBEHOIST_LAB_ROOT; default /var/lib/kubehoist/lab].",
    )(f)


def _lab(root: Path) -> LabSpec:
    root = root.resolve()
    if not (root / "lab.json").exists():
        raise KubehoistError(f"no lab at {root} (run `{prog()} lab up --root {root}`)")
    return LabSpec.load(root)


def _node(spec: LabSpec, name: str) -> LabNode:
    try:
        return spec.node(name)
    except KeyError:
        names = ", ".join(n.name for n in spec.nodes)
        raise KubehoistError(f"no node {name!r} in the lab (nodes: {names})") from None


UNITS = ("kubelet", "containerd")


@click.command("logs")
@click.argument("node")
@click.option(
    "-u", "--unit", type=click.Choice(UNITS), default="kubelet", show_default=True,
    help="Which daemon's log (as `journalctl -u`).",
)  # fmt: skip
@_root_option
def logs(node: str, unit: str, root: Path) -> None:
    """Print the log of a node's kubelet or containerd (as `journalctl -u UNIT`)."""
    spec = _lab(root)
    path = labnode.log_dir(spec, _node(spec, node)) / f"{unit}.log"
    if not path.exists():
        raise KubehoistError(f"{path}: no {unit} log on node {node} yet")
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_root_option
def exec_(node: str, command: tuple[str, ...], root: Path) -> None:
    """Run COMMAND on a lab node (in its network, mount and UTS namespaces), e.g.
    `kubehoist lab exec cp-1 -- crictl ps`. crictl there talks to the node's
    containerd."""
    spec = _lab(root)
    n = _node(spec, node)
    argv = labnode.enter_argv(spec, n) + list(command)
    bins = binmod.locate(spec.kubernetes_version, spec.etcd_version)
    env = dict(
        os.environ,
        PATH=f"{bins.path('crictl').parent}:{bins.path('ctr').parent}:{os.environ.get('PATH', '')}",
        CONTAINER_RUNTIME_ENDPOINT=f"unix://{nodeconfig.CONTAINERD_SOCKET}",
        IMAGE_SERVICE_ENDPOINT=f"unix://{nodeconfig.CONTAINERD_SOCKET}",
        CONTAINERD_ADDRESS=nodeconfig.CONTAINERD_SOCKET,
        CONTAINERD_NAMESPACE="k8s.io",
    )
    sys.exit(subprocess.run(argv, env=env, check=False).returncode)


@click.group("image")
def image() -> None:
    """The lab's images: archives imported into every node's containerd."""


@image.command("build")
@click.option("-t", "--tag", "name", required=True, help="Name of the image, e.g. vip/kcm:v1.")
@click.option(
    "-f",
    "--file",
    "dockerfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Dockerfile [default: CONTEXT/Dockerfile].",
)
@click.argument("context", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_root_option
def build(name: str, dockerfile: Path | None, context: Path, root: Path) -> None:
    """Build an image from FROM <lab image> plus ADD/COPY lines; every running node
    imports it (a node that boots later imports it at boot)."""
    spec = _lab(root)
    bins = binmod.locate(spec.kubernetes_version, spec.etcd_version)
    archive = labdockerfile.build_from_dockerfile(
        spec.root,
        name,
        dockerfile or context / "Dockerfile",
        context,
        binaries=bins,
        kubernetes_version=spec.kubernetes_version,
    )
    imported = []
    for n in spec.nodes:
        try:
            argv = labnode.enter_argv(spec, n)
        except KubehoistError:
            continue  # not running: it imports the image when it boots
        images.import_archives(argv, bins.path("ctr"), [archive])
        imported.append(n.name)
    where = f"imported on {', '.join(imported)}" if imported else "no node running"
    click.echo(f"built {name} ({archive.stat().st_size / 2**20:.1f} MiB, {where})")


@image.command("list")
@_root_option
def list_images(root: Path) -> None:
    """The lab's images: name, size, image id, origin."""
    spec = _lab(root)
    bins = binmod.locate(spec.kubernetes_version, spec.etcd_version)
    for row in images.image_table(bins, spec.kubernetes_version, spec.root):
        size = f"{row.size / 2**20:.1f}MiB" if row.size is not None else "-"
        click.echo(f"{row.name}\t{size}\t{(row.image_id or '-')[:19]}\t{row.origin}")


@click.command("install")
@click.argument("nodes", nargs=-1, required=True)
@click.option(
    "--kubernetes-version",
    required=True,
    metavar="VERSION",
    help=f"The version to install ({', '.join(specmod.KUBERNETES_VERSIONS)}).",
)
@click.option("--no-images", is_flag=True, help="Install the programs only.")
@_root_option
def install(nodes: tuple[str, ...], kubernetes_version: str, no_images: bool, root: Path) -> None:
    """Install another version's kubeadm and kubelet on running lab NODES (and import
    its control-plane images), as before a `kubeadm upgrade`. The kubelet runs the new
    binary after `kubehoist lab exec NODE -- systemctl restart kubelet`."""
    from kubehoist.lab import install as labinstall

    spec = _lab(root)
    for name in nodes:
        n = _node(spec, name)
        click.echo(labinstall.install(spec, n, kubernetes_version, images_too=not no_images))


@click.command("upgrade")
@click.option(
    "--kubernetes-version",
    required=True,
    metavar="VERSION",
    help=f"The version to upgrade to ({', '.join(specmod.KUBERNETES_VERSIONS)}).",
)
@click.option(
    "--node",
    "nodes",
    multiple=True,
    help="Upgrade only these nodes, in this order (default: every node, control planes first).",
)
@click.option(
    "--timeout", type=float, default=900, show_default=True, help="Seconds per kubeadm run."
)
@_root_option
def upgrade(kubernetes_version: str, nodes: tuple[str, ...], timeout: float, root: Path) -> None:
    """Upgrade the lab with kubeadm, as its documentation says: on each node install the
    version's kubeadm and kubelet (`lab install`), `kubeadm upgrade apply` on the first
    control plane, `kubeadm upgrade node` on the others, restart the kubelet. On a
    pivoted cluster run `kubehoist upgrade prepare` before and `upgrade complete` after."""
    from kubehoist.lab import install as labinstall

    spec = _lab(root)
    took = labinstall.upgrade_cluster(
        spec, kubernetes_version, line=lambda s: click.echo(s, err=True), nodes=nodes or None,
        timeout=timeout,
    )  # fmt: skip
    click.echo(f"upgraded {', '.join(took)} to {kubernetes_version} in {sum(took.values()):.1f}s")
