"""`kubehoist image build`: the kubehoist image (the guard's), without Docker and
without a registry, as an OCI layout archive (or a docker archive) that containerd,
skopeo, podman and Docker load, and that any registry takes once pushed."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kubehoist.image import build as imagebuild
from kubehoist.image.archive import FORMATS, Format
from kubehoist.image.config import normalize


@click.group("image")
def image() -> None:
    """The kubehoist image: what the guard's static pod runs."""


@image.command("build")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Archive to write [default: kubehoist-<version>.oci.tar, or .docker.tar].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="oci",
    show_default=True,
    help="oci: an OCI image layout archive (gzip layers); docker: a `docker save` archive.",
)
@click.option(
    "-t",
    "--tag",
    default=None,
    help=f"Name of the image [default: {imagebuild.REPOSITORY}:<version>].",
)
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The kubehoist wheel to install [default: built from this source tree with "
    "`python3 -m build --wheel`].",
)
@click.option(
    "--base",
    "base_rootfs",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A Debian bookworm root filesystem tarball (with python3) to build on, instead "
    "of running mmdebstrap.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KUBEHOIST_CACHE",
    default=None,
    help="Where the base layers are kept [env KUBEHOIST_CACHE; default ~/.cache/kubehoist].",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the reference and digest.")
def build(
    output: Path | None,
    fmt: Format,
    tag: str | None,
    wheel: Path | None,
    base_rootfs: Path | None,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Build the kubehoist image from its wheel, reproducibly: the same wheel and
    base layers give the same bytes, so the same digest. Prints the image's
    reference and manifest digest."""
    if cache_dir is not None:
        os.environ["KUBEHOIST_CACHE"] = str(cache_dir.resolve())

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    name = normalize(tag) if tag else None
    with imagebuild.project_wheel(wheel) as w:
        say(f"wheel {w.path.name}" + ("" if wheel else " (built from the source tree)"))
        base = imagebuild.rootfs_layer(base_rootfs) if base_rootfs else None
        dest = output or Path(f"kubehoist-{w.version}.{fmt}.tar")
        archive = imagebuild.write_kubehoist_image(dest, w, name=name, fmt=fmt, base=base, say=say)
    say(
        f"wrote {dest}: {'OCI image layout' if fmt == 'oci' else 'docker archive'}, "
        f"{len(archive.layers)} layers, {archive.size / 2**20:.1f} MiB, "
        f"image id {archive.image_id}"
    )
    if archive.digest is None:  # a docker archive has no manifest: the registry makes it
        click.echo(archive.names[0])
    else:
        click.echo(f"{archive.names[0]}@{archive.digest}")
