"""`kubehoist lab logs` and `kubehoist lab image …`: a lab pod's container logs, and
the lab's image store (images built from a Dockerfile of the article's shape)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from kubehoist.errors import KubehoistError, UsageError
from kubehoist.lab import spec as specmod
from kubehoist.lab.kubelet import images


def _root_option(f: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KUBEHOIST_LAB_ROOT",
        default=specmod.DEFAULT_ROOT,
        help="Lab root directory [env KUBEHOIST_LAB_ROOT; default /var/lib/kubehoist/lab].",
    )(f)


def _lab_root(root: Path) -> Path:
    root = root.resolve()
    if not (root / "lab.json").exists():
        raise KubehoistError(f"no lab at {root} (run `kubehoist lab up --root {root}`)")
    return root


def find_log(root: Path, namespace: str, pod: str, container: str | None, previous: bool) -> Path:
    """The log file of a pod's container (the newest pod of that name on any node)."""
    candidates = [
        d
        for d in root.glob(f"nodes/*/var/log/pods/{namespace}_{pod}_*")
        if d.is_dir() and d.name.rsplit("_", 1)[0] == f"{namespace}_{pod}"
    ]
    if not candidates:
        raise KubehoistError(f'Error from server (NotFound): pods "{pod}" not found')
    pod_dir = max(candidates, key=lambda d: d.stat().st_mtime)
    containers = sorted(d.name for d in pod_dir.iterdir() if d.is_dir())
    if container is None:
        if len(containers) != 1:
            raise UsageError(
                f"a container name must be specified for pod {pod}, "
                f"choose one of: [{' '.join(containers)}]"
            )
        container = containers[0]
    elif container not in containers:
        raise KubehoistError(f"container {container} is not valid for pod {pod}")
    runs = sorted(
        int(p.stem) for p in (pod_dir / container).glob("*.log") if re.fullmatch(r"\d+", p.stem)
    )
    if not runs:
        raise KubehoistError(f'container "{container}" in pod "{pod}" has no log yet')
    if previous:
        if len(runs) < 2:
            raise KubehoistError(
                f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        return pod_dir / container / f"{runs[-2]}.log"
    return pod_dir / container / f"{runs[-1]}.log"


@click.command("logs")
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", default=None, help="Container name.")
@click.option("-p", "--previous", is_flag=True, help="The previous run of the container.")
@_root_option
def logs(pod: str, namespace: str, container: str | None, previous: bool, root: Path) -> None:
    """Print the log of a lab pod's container (as `kubectl logs`)."""
    path = find_log(_lab_root(root), namespace, pod.removeprefix("pod/"), container, previous)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@click.group("image")
def image() -> None:
    """The lab's images: built from a Dockerfile over a mapped image."""


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
    """Build an image from FROM <mapped image> plus ADD/COPY lines."""
    try:
        built = images.build(_lab_root(root), name, context, dockerfile=dockerfile)
    except images.ImageError as exc:
        raise KubehoistError(str(exc)) from exc
    click.echo(f"built {built.name} (FROM {built.base}, {len(built.files)} added path(s))")


@image.command("list")
@_root_option
def list_images(root: Path) -> None:
    """The built images and the table of mapped images."""
    for built in images.list_built(_lab_root(root)):
        click.echo(f"{built.name}\tFROM {built.base}")
    for row in images.IMAGE_TABLE:
        click.echo(f"{row.pattern}\t{row.description}")
