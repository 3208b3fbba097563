"""`kubehoist credentials refresh`: a thin wrapper around `kubehoist.pivot.refresh`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from kubehoist import kube
from kubehoist.certexpiry import ClientCert
from kubehoist.cli.options import kubeconfig_options, prog, resolve_components
from kubehoist.pivot import events, refresh
from kubehoist.pivot.workflow import Progress


@click.group("credentials")
def credentials() -> None:
    """The credentials Secret of a pivoted component."""


def _cert_text(c: ClientCert) -> str:
    return f"serial {c.serial}, not after {c.not_after:%Y-%m-%d %H:%M} UTC"


@credentials.command("refresh")
@click.argument("component", required=False, default="kube-controller-manager")
@kubeconfig_options
@click.option(
    "--host-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Where a control-plane node's files are (the renewed kubeconfigs and "
    "certificates are read under it).",
)
@click.option(
    "-f",
    "--filename",
    "manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The static pod manifest (default: the parked one under --host-root, "
    "<host-root>/etc/kubernetes/kubehoist/parked/<component>.yaml).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--timeout", type=float, default=180, show_default=True, help="Seconds per wait.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the roll and a new leader.")
def refresh_command(
    *,
    component: str,
    kubeconfig: str | None,
    context: str | None,
    host_root: Path,
    manifest: Path | None,
    dry_run: bool,
    timeout: float,
    no_wait: bool,
) -> None:
    """Make COMPONENT's credentials Secret again from the node's files (after
    `kubeadm certs renew`) and roll its Deployment onto it."""
    comp = resolve_components((component,))[0]
    client = kube.connect(kube.target(kubeconfig=kubeconfig, context=context))
    progress = Progress()
    path = refresh.manifest_path(comp, host_root, manifest)
    pod = refresh.load_pod(path, comp)
    p = refresh.plan(client, comp, pod=pod, host_root=host_root, now=datetime.now(UTC))
    for w in p.warnings:
        if any(t in w for t in ("Lease on SIGTERM", "keeps server", "expires in")):
            progress.line(f"warning: {w}")
    where = f"Secret kube-system/{p.secret}"
    if p.up_to_date:
        progress.line(f"{where} already holds the node's files ({path}): nothing to do")
        return
    progress.line(
        f"{where}: {len(p.changed_keys)} key(s) change: {', '.join(p.changed_keys) or '(none)'}"
    )
    before = {(c.secret_key, c.user): c for c in p.certs_before}
    for c in p.certs_after:
        old = before.get((c.secret_key, c.user))
        was = _cert_text(old) if old else "(none)"
        progress.line(f"  {c.secret_key} user {c.user}: {was} -> {_cert_text(c)}")
    if dry_run:
        progress.line(
            f"would server-side apply {where} and roll Deployment kube-system/{comp.name} "
            f"(annotation credentials-sha256 {p.new_sha256[:12]})"
        )
        progress.line("dry run: nothing was changed")
        return
    refresh.apply(client, p)
    message = f"{where} refreshed from {path} ({', '.join(p.changed_keys) or 'annotation only'})"
    events.record(client, component=comp.name, reason="CredentialsRefreshed", message=message)
    progress.line(f"applied {where}; rolling Deployment kube-system/{comp.name}")
    if no_wait:
        progress.line(f"not waiting: `{prog()} status {comp.name}` shows the roll")
        return
    leader = refresh.wait_rolled(client, comp, timeout=timeout, line=progress.line)
    progress.line(f"{leader} leads; {comp.name} runs on the refreshed credentials")
