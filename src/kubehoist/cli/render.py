"""`kubehoist render`: print the Deployment, credentials and PDB for a static pod manifest.

Thin: parse the command line, read the manifest, gather the node's files
(`kubehoist.hostfiles`), call the pure renderer, print. Warnings go to stderr, objects
to stdout (multi-document YAML, or a JSON List with -o json) or to --output-dir.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from kubehoist import hostfiles, kube
from kubehoist.cli.options import release_options, resolve_components
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.kube import controlplane
from kubehoist.manifest import StaticPod, load_static_pod
from kubehoist.render import Inputs, RenderOptions, dump, render
from kubehoist.render.options import DEFAULT_REPLICAS
from kubehoist.safeyaml import MAX_BYTES

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """Report a KubehoistError as `error: <one line>` and its exit code, with no traceback.

    The CLI group does the same; doing it here too keeps the command right when it is
    invoked on its own.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KubehoistError as exc:
            click.echo("error: " + " ".join(exc.message.split()), err=True)
            sys.exit(exc.exit_code)

    return cast(F, wrapper)


def _node_selector(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        key, eq, val = value.partition("=")
        if not eq or not key:
            raise UsageError(f"--node-selector {value!r}: expected key=value")
        pairs.append((key, val))
    return tuple(pairs)


def _read_manifest(path: Path) -> str:
    """The manifest's text, read no further than the YAML size limit (a FIFO or a
    device such as /dev/zero cannot make render read without end)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise KubehoistError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise KubehoistError(f"{path}: more than {MAX_BYTES} bytes, the most render reads")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KubehoistError(f"{path}: not YAML: not UTF-8 text") from None


def _from_cluster(
    options: RenderOptions,
    *,
    component: str,
    node: str | None,
    kubeconfig: str | None,
    context: str | None,
    host_root: Path | None,
) -> tuple[StaticPod, Inputs, tuple[str, ...]]:
    """The live static pod, what the render needs from the node, and what to say."""
    where = kube.target(kubeconfig=kubeconfig, context=context)
    client = kube.connect(where)
    live = controlplane.read_static_pod(client, component=component, node=node, server=where.server)
    warnings = [
        *live.warnings,
        f"rendering the live static pod pod/{component}-{live.node} ({where.server})",
    ]
    if options.secret_exists or host_root is None:
        return live.pod, Inputs(), tuple(warnings)
    inputs = hostfiles.gather_inputs(live.pod, options, host_root=host_root)
    if options.server is None:
        endpoint, source, said = controlplane.read_control_plane_endpoint(
            client, server=where.server
        )
        warnings.extend(said)
        if endpoint is not None:
            inputs = replace(inputs, control_plane_endpoint=endpoint, endpoint_source=source)
    return live.pod, inputs, tuple(warnings)


@click.command("render")
@click.option(
    "-f",
    "--filename",
    "manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The static pod manifest (e.g. /etc/kubernetes/manifests/kube-controller-manager.yaml).",
)
@click.option("--from-cluster", is_flag=True, help="Read the live mirror pod instead of a file.")
@click.option(
    "--node",
    help="With --from-cluster: the control-plane node whose pod to read "
    "(default: the first, by name, that runs one).",
)
@click.option(
    "--component",
    default="kube-controller-manager",
    show_default=True,
    help="With --from-cluster: which static pod to read (kcm and scheduler allowed).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="With --from-cluster: the kubeconfig (else KUBECONFIG, else ~/.kube/config).",
)
@click.option("--context", help="With --from-cluster: the kubeconfig context to use.")
@click.option(
    "--host-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the node's filesystem is (the files the flags name are read under it); "
    "default / (with --from-cluster: required unless --secret-name).",
)
@click.option("--secret-name", help="Use this existing Secret for the credentials; read no file.")
@click.option(
    "--credentials",
    type=click.Choice(["secret", "image"]),
    default="secret",
    show_default=True,
    help="Carry the credentials in a Secret, or bake them into an image (unsafe).",
)
@click.option("--replicas", type=click.IntRange(min=1), default=DEFAULT_REPLICAS, show_default=True)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="--secure-port of the Deployment (default 10357 for KCM, 10359 for the scheduler).",
)
@click.option("--image", help="Container image (image mode: the image to build).")
@click.option("--node-selector", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--spread", type=click.Choice(["hostname", "zone"]), default="hostname", show_default=True
)
@click.option(
    "--server", help="API endpoint for the pods' kubeconfigs (default: controlPlaneEndpoint)."
)
@click.option("--lease-duration", metavar="DURATION")
@click.option("--renew-deadline", metavar="DURATION")
@click.option("--retry-period", metavar="DURATION")
@click.option("--set-flag", multiple=True, metavar="--NAME=VALUE", help="Set a component flag.")
@click.option("--drop-flag", multiple=True, metavar="--NAME", help="Remove a component flag.")
@click.option("--host-network", is_flag=True, help="Run the pods on the node's network.")
@release_options
@click.option(
    "--force", is_flag=True, help="Render a static pod that runs without leader election."
)
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per object (and the image build context) here instead of stdout.",
)
@_one_line_errors
def command(
    *,
    manifest: Path | None,
    from_cluster: bool,
    node: str | None,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    host_root: Path | None,
    secret_name: str | None,
    credentials: str,
    replicas: int,
    port: int | None,
    image: str | None,
    node_selector: tuple[str, ...],
    spread: str,
    server: str | None,
    lease_duration: str | None,
    renew_deadline: str | None,
    retry_period: str | None,
    set_flag: tuple[str, ...],
    drop_flag: tuple[str, ...],
    host_network: bool,
    release_lease_on_exit: bool,
    kubernetes_version: str | None,
    force: bool,
    output: str,
    output_dir: Path | None,
) -> None:
    """Render a static pod as a Deployment, its credentials and a PodDisruptionBudget."""
    if from_cluster and manifest is not None:
        raise UsageError("-f and --from-cluster exclude each other")
    if not from_cluster:
        for given, flag in (
            (node, "--node"),
            (kubeconfig, "--kubeconfig"),
            (context, "--context"),
            (component != "kube-controller-manager" or None, "--component"),
        ):
            if given is not None:
                raise UsageError(f"{flag} needs --from-cluster")
    if from_cluster and host_root is None and secret_name is None:
        raise UsageError(
            "--from-cluster: the credentials' files cannot be read through the API; pass "
            "--host-root DIR (on a control-plane node: --host-root /) or --secret-name NAME "
            "(an existing Secret)"
        )
    if not from_cluster and manifest is None:
        raise UsageError("missing -f MANIFEST (or --from-cluster)")
    if credentials == "image" and output_dir is None:
        raise UsageError("--credentials image needs --output-dir for the image build context")

    options = RenderOptions(
        now=datetime.now(UTC),
        credentials="image" if credentials == "image" else "secret",
        secret_name=secret_name,
        secret_exists=secret_name is not None,
        replicas=replicas,
        port=port,
        image=image,
        node_selector=_node_selector(node_selector),
        spread="zone" if spread == "zone" else "hostname",
        server=server,
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        set_flags=set_flag,
        drop_flags=drop_flag,
        host_network=host_network,
        force=force,
        release_lease_on_exit=release_lease_on_exit,
        kubernetes_version=kubernetes_version,
    )
    warnings: tuple[str, ...] = ()
    if from_cluster:
        pod, inputs, warnings = _from_cluster(
            options,
            component=resolve_components((component,))[0].name,
            node=node,
            kubeconfig=kubeconfig,
            context=context,
            host_root=host_root,
        )
    else:
        assert manifest is not None
        pod = load_static_pod(_read_manifest(manifest), source=str(manifest))
        inputs = hostfiles.gather_inputs(pod, options, host_root=host_root or Path("/"))
    rendered = render(pod, options, inputs)
    for warning in (*warnings, *rendered.warnings):
        click.echo(f"warning: {warning}", err=True)
    if output_dir is not None:
        for path in hostfiles.write_output_dir(output_dir, rendered, output=output):
            click.echo(f"wrote {path}", err=True)
        return
    click.echo(dump(rendered.objects, output=output), nl=False)
