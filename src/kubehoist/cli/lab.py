"""`kubehoist lab …`: build the binaries, bring a lab up, show it, take it down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from kubehoist.cli.options import prog
from kubehoist.errors import KubehoistError
from kubehoist.lab import binaries as binmod
from kubehoist.lab import labstate, procs, supervisor
from kubehoist.lab import spec as specmod
from kubehoist.lab.spec import LabSpec

ROOT_HELP = "Lab root directory [env KUBEHOIST_LAB_ROOT; default /var/lib/kubehoist/lab]."


def _root_option(f: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KUBEHOIST_LAB_ROOT",
        default=specmod.DEFAULT_ROOT,
        show_default=False,
        help=ROOT_HELP,
    )(f)


def _load(root: Path) -> LabSpec:
    root = root.resolve()
    if not (root / "lab.json").exists():
        raise KubehoistError(f"no lab at {root} (run `{prog()} lab up --root {root}`)")
    try:
        return LabSpec.load(root)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise KubehoistError(f"{root / 'lab.json'}: unreadable: {exc}") from exc


def _need_root() -> None:
    if os.geteuid() != 0:
        raise KubehoistError("the lab needs root (it creates network and mount namespaces)")
    if shutil.which("ip") is None:
        raise KubehoistError("the lab needs iproute2's `ip` on PATH (apt-get install iproute2)")


@click.group()
def lab() -> None:
    """A local lab: real Kubernetes binaries, kubeadm-made, on one machine."""


def _version_option(f: Any) -> Any:
    return click.option(
        "--kubernetes-version",
        default=specmod.KUBERNETES_VERSION,
        show_default=True,
        metavar="VERSION",
        help="Kubernetes version of the lab's binaries and images "
        f"({', '.join(specmod.KUBERNETES_VERSIONS)}).",
    )(f)


@lab.command("build")
@_version_option
@click.option(
    "--tools/--no-tools",
    default=False,
    show_default=True,
    help="Also build the tests' tools (promtool, which checks the alerting rules).",
)
def build(kubernetes_version: str, tools: bool) -> None:
    """Build (or find in the cache) the lab's binaries and image archives of one
    Kubernetes version (and with --tools the tests' promtool)."""
    from kubehoist.lab import images

    start = time.monotonic()
    bins = binmod.ensure(kubernetes_version)
    names: tuple[str, ...] = binmod.ALL_BINARIES
    if tools:
        binmod.ensure_tools()  # promtool's place does not depend on the version
        names = (*names, *binmod.TOOL_BINARIES)
    for name in names:
        path = bins.path(name)
        click.echo(f"{name:<24} {path.stat().st_size / 2**20:7.1f} MiB  {path}")
    for archive in images.lab_images(bins, kubernetes_version):
        click.echo(f"{'image':<24} {archive.stat().st_size / 2**20:7.1f} MiB  {archive}")
    click.echo(f"ready in {time.monotonic() - start:.1f}s", err=True)


@lab.command("up")
@_root_option
@click.option("--control-planes", type=click.IntRange(1, 9), default=1, show_default=True)
@click.option("--workers", type=click.IntRange(0, 50), default=2, show_default=True)
@click.option(
    "--host-port",
    type=click.IntRange(1, 65535),
    default=specmod.DEFAULT_HOST_PORT,
    show_default=True,
    help="Port on 127.0.0.1 where the host reaches the API server.",
)
# A first `lab up` runs kubeadm init and then one control-plane join after another
# (each 40-120 s on a loaded 2-core machine): 10 minutes for a 3-control-plane lab.
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait.")
@_version_option
def up(
    root: Path,
    control_planes: int,
    workers: int,
    host_port: int,
    timeout: float,
    kubernetes_version: str,
) -> None:
    """Bring a lab up (or start a stopped one again, keeping its state)."""
    _need_root()
    binmod.check_supported(kubernetes_version)
    root = root.resolve()
    if (root / "lab.json").exists():
        spec = _load(root)
        given = click.get_current_context().get_parameter_source("kubernetes_version")
        if (
            given != click.core.ParameterSource.DEFAULT
            and spec.kubernetes_version != kubernetes_version
        ):
            raise KubehoistError(
                f"lab at {root} runs Kubernetes {spec.kubernetes_version}, not "
                f"{kubernetes_version}; `{prog()} lab down --purge` it first"
            )
        if labstate.is_running(spec):
            click.echo(f"lab at {root} is already running", err=True)
            _print_usage(spec)
            return
        if (len(spec.control_planes), len(spec.workers)) != (control_planes, workers) and (
            click.get_current_context().get_parameter_source("workers")
            != click.core.ParameterSource.DEFAULT
            or click.get_current_context().get_parameter_source("control_planes")
            != click.core.ParameterSource.DEFAULT
        ):
            raise KubehoistError(
                f"lab at {root} has {len(spec.control_planes)} control plane(s) and "
                f"{len(spec.workers)} worker(s); `{prog()} lab down --purge` it first"
            )
    else:
        try:
            spec = specmod.plan(
                root,
                control_planes=control_planes,
                workers=workers,
                host_port=host_port,
                kubernetes_version=kubernetes_version,
            )
        except ValueError as exc:
            raise KubehoistError(str(exc)) from exc
        spec.save()
    binmod.ensure(spec.kubernetes_version, spec.etcd_version)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    spec.logs_dir.mkdir(parents=True, exist_ok=True)
    labstate.state_path(spec).unlink(missing_ok=True)
    with open(spec.logs_dir / "supervisor.log", "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubehoist", "lab", "supervise", "--root", str(spec.root)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )
    _wait_up(spec, proc, timeout)
    _print_usage(spec)


def _wait_up(spec: LabSpec, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        state = labstate.read_state(spec)
        phase = state.get("phase", "")
        message = state.get("message", "")
        if message and message != shown:
            click.echo(f"lab: {message}", err=True)
            shown = message
        if phase == "ready":
            return
        if phase == "failed" or proc.poll() is not None:
            _stop(spec, quiet=True)
            raise KubehoistError(
                f"lab failed to start: {message or 'supervisor exited'} "
                f"(see {spec.logs_dir / 'supervisor.log'})"
            )
        time.sleep(0.3)
    _stop(spec, quiet=True)
    raise KubehoistError(f"lab not ready after {timeout:.0f}s (see {spec.logs_dir}/)")


def _print_usage(spec: LabSpec) -> None:
    kc = spec.admin_kubeconfig
    click.echo(
        f"lab ready: {len(spec.control_planes)} control plane(s), {len(spec.workers)} worker(s), "
        f"Kubernetes {spec.kubernetes_version}\n"
        f"  export KUBECONFIG={kc}\n"
        f"  kubectl --kubeconfig {kc} get nodes\n"
        f"  kubehoist --kubeconfig {kc} status"
    )


def _stop(spec: LabSpec, *, quiet: bool = False, timeout: float = 90) -> None:
    pid_file = spec.run_dir / "supervisor.pid"
    if labstate.is_running(spec) and pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while labstate.is_running(spec) and time.monotonic() < deadline:
                time.sleep(0.2)
            if labstate.is_running(spec):
                if not quiet:
                    click.echo(
                        f"supervisor {pid} did not stop in {timeout:.0f}s; killing", err=True
                    )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # the lock goes with the process, but wait for the process itself too
            gone_by = time.monotonic() + 10
            while procs.alive(pid) and time.monotonic() < gone_by:
                time.sleep(0.1)
    asyncio.run(supervisor.cleanup_leftovers(spec))


@lab.command("down")
@_root_option
@click.option("--purge", is_flag=True, help="Also delete the lab root (all its state).")
def down(root: Path, purge: bool) -> None:
    """Stop everything the lab runs (its state stays unless --purge)."""
    _need_root()
    root = root.resolve()
    if not (root / "lab.json").exists():
        if purge and root.exists():
            shutil.rmtree(root)
        click.echo(f"no lab at {root}", err=True)
        return
    spec = _load(root)
    _stop(spec)
    if purge:
        supervisor.purge(spec)
        click.echo(f"lab at {root} stopped and deleted", err=True)
    else:
        click.echo(f"lab at {root} stopped", err=True)


@lab.command("status")
@_root_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def status(root: Path, output: str) -> None:
    """Components, pids, health and nodes of the lab (exit 1 unless it is up)."""
    spec = _load(root)
    info = lab_status(spec)
    if output == "json":
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        click.echo(f"lab {spec.root}  ({info['phase']})  API https://127.0.0.1:{spec.host_port}")
        click.echo(f"  supervisor  pid {info['supervisor_pid'] or '-'}")
        for name, p in info["processes"].items():
            click.echo(f"  {name:<24} pid {p['pid'] or '-':<8} restarts {p['restarts']}")
        click.echo(f"  readyz      {'ok' if info['readyz'] else 'not ready'}")
        click.echo(f"  {'NODE':<12} {'ROLE':<14} {'READY':<6} {'IP':<14} PODCIDR")
        for n in info["nodes"]:
            click.echo(
                f"  {n['name']:<12} {n['role']:<14} {n['ready']:<6} {n['ip']:<14} {n['podCIDR']}"
            )
    if info["phase"] != "ready" or not info["readyz"]:
        sys.exit(1)


def lab_status(spec: LabSpec) -> dict[str, Any]:
    running = labstate.is_running(spec)
    state = labstate.read_state(spec) if running else {}
    nodes: dict[str, str] = {}
    readyz = False
    pods: dict[str, Any] = {}
    if running:
        bins = binmod.locate(spec.kubernetes_version, spec.etcd_version)
        readyz = supervisor.Supervisor(spec, bins)._readyz()
        if readyz:
            nodes = _node_readiness(spec)
        pods = labstate.static_pods(spec, bins.path("crictl"))
    return {
        "root": str(spec.root),
        "phase": state.get("phase", "down") if running else "down",
        "supervisor_pid": state.get("supervisor_pid"),
        "processes": pods,
        "readyz": readyz,
        "nodes": [
            {
                "name": n.name,
                "role": "control-plane" if n.control_plane else "worker",
                "ip": n.ip,
                "podCIDR": n.pod_cidr,
                "ready": nodes.get(n.name, "-"),
            }
            for n in spec.nodes
        ],
    }


def _node_readiness(spec: LabSpec) -> dict[str, str]:
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.resources.core_v1 import Node

    client = Client(KubeConfig.from_file(str(spec.admin_kubeconfig)), trust_env=False)
    out: dict[str, str] = {}
    for node in client.list(Node):
        assert node.metadata is not None and node.metadata.name is not None
        ready = "Unknown"
        for c in (node.status.conditions if node.status else None) or []:
            if c.type == "Ready":
                ready = c.status
        out[node.metadata.name] = ready
    return out


@lab.command("supervise", hidden=True)
@_root_option
def supervise(root: Path) -> None:
    """(internal) The lab's supervisor process; `lab up` starts it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    spec = _load(root)
    sys.exit(supervisor.supervise(spec, binmod.locate(spec.kubernetes_version, spec.etcd_version)))


# The nodes' and images' commands (kept in their own module).
from kubehoist.cli import lab_leaders, lab_pods  # noqa: E402

lab.add_command(lab_pods.logs)
lab.add_command(lab_pods.image)
lab.add_command(lab_pods.exec_)
lab.add_command(lab_pods.install)
lab.add_command(lab_pods.upgrade)
lab.add_command(lab_leaders.leaders_command)
