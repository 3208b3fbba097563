"""`kubehoist demo`: the article's story in a fresh lab (see `kubehoist.lab.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from kubehoist.lab.demo import Demo


@click.command("demo")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/kubehoist/demo"),
    show_default=True,
    help="Lab root for the demo (wiped first).",
)
@click.option("--host-port", type=click.IntRange(1, 65535), default=16490, show_default=True)
@click.option("--workers", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the lab up at the end.")
@click.option(
    "--picture",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("kubehoist-demo.svg"),
    show_default=True,
    help="Where to draw the run's timeline (`kubehoist timeline`); its `watch` record is "
    "written beside it (.jsonl). '' for none.",
)
def command(root: Path, host_port: int, workers: int, keep: bool, picture: Path) -> None:
    """Tell the article's story in a lab: pivot, scale, failover, the circular dependency."""
    Demo(
        root=root,
        host_port=host_port,
        workers=workers,
        keep=keep,
        picture=picture if str(picture) not in ("", ".") else None,
    ).run()
