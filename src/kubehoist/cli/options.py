"""Options shared by the verbs that talk to a cluster, spelled like kubectl's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from kubehoist.components import COMPONENTS, Component
from kubehoist.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

ALIASES: Final = {"kcm": "kube-controller-manager", "scheduler": "kube-scheduler"}


def prog() -> str:
    """How the user called us (`kubehoist` or `kubectl hoist`), for messages naming a verb."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().info_name if ctx is not None else None) or "kubehoist"


def cluster_options(func: F) -> F:
    """--kubeconfig, --context, -n/--namespace, -v."""
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        help="Print every API request on stderr, and their number.",
    )(func)
    func = click.option(
        "-n",
        "--namespace",
        default="kube-system",
        show_default=True,
        help="Namespace of the Leases and the candidate pods.",
    )(func)
    return kubeconfig_options(func)


def kubeconfig_options(func: F) -> F:
    """--kubeconfig, --context."""
    func = click.option("--context", help="The kubeconfig context to use.")(func)
    func = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        help="Path to the kubeconfig file (else KUBECONFIG, else ~/.kube/config).",
    )(func)
    return func


def resolve_components(names: tuple[str, ...]) -> list[Component]:
    """COMPONENT… arguments (default: all), aliases kcm and scheduler allowed."""
    if not names:
        return list(COMPONENTS.values())
    out: list[Component] = []
    for raw in names:
        name = ALIASES.get(raw, raw)
        component = COMPONENTS.get(name)
        if component is None:
            known = ", ".join([*COMPONENTS, *ALIASES])
            raise UsageError(f"unknown component {raw!r} (known: {known})")
        if component not in out:
            out.append(component)
    return out


def release_options(func: F) -> F:
    """--release-lease-on-exit, --kubernetes-version (render and pivot)."""
    func = click.option(
        "--kubernetes-version",
        metavar="VERSION",
        help="The component's version when the image's tag does not say it (e.g. v1.36.3).",
    )(func)
    func = click.option(
        "--release-lease-on-exit",
        is_flag=True,
        help="Make the Deployment's leader release its Lease on SIGTERM: turns on "
        "kube-controller-manager's alpha gate ControllerManagerReleaseLeaderElectionLockOnExit "
        "(v1.36 and later; refused where the version has no such gate).",
    )(func)
    return func
