"""Whether the Deployment's leader releases its Lease when it is stopped, by version.

A leader that keeps its Lease on SIGTERM makes every rollout or eviction of it an
outage of a whole lease duration: the standbys cannot take the Lease before it
expires. kube-scheduler releases it in every version (client-go's ReleaseOnCancel).
kube-controller-manager up to v1.35 never does; v1.36 does behind the alpha feature
gate `ControllerManagerReleaseLeaderElectionLockOnExit` (k8s.io/controller-manager
pkg/features, default false): on, the process cancels its context on SIGTERM
(`server.SetupSignalContext`) and runs leader election with ReleaseOnCancel, so the
Lease is emptied before the process exits and a standby takes it at its next retry.

The component's version is read from the Deployment's image tag, or from
`--kubernetes-version` when given (a digest or a private tag says nothing). Where the
gate exists and the user asks for it (`--release-lease-on-exit`), render turns it on,
merged into the last `--feature-gates` value (a component merges every occurrence,
the last assignment of a gate wins); where it does not exist, the flag is refused, as
a v1.35 controller manager refuses an unknown gate and would not start. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubehoist import kubeversion
from kubehoist.components import Component
from kubehoist.errors import UsageError
from kubehoist.kubeversion import KubeVersion
from kubehoist.manifest import Arg, Flag
from kubehoist.render.options import RenderOptions

FEATURE_GATES = "feature-gates"
OPTION = "--release-lease-on-exit"
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})
"""strconv.ParseBool's spellings (case-insensitive here, as the component's are)."""


def gate_pairs(value: str) -> list[tuple[str, str]]:
    """`A=true, B=false` as the component parses it: (name, value) pairs, trimmed."""
    pairs = []
    for part in value.split(","):
        if not part:
            continue
        name, _, val = part.partition("=")
        pairs.append((name.strip(), val.strip()))
    return pairs


def gate_setting(items: Sequence[Arg], gate: str) -> bool | None:
    """The gate's value after every `--feature-gates` occurrence, or None when unset."""
    found: bool | None = None
    for item in items:
        if isinstance(item, Flag) and item.name == FEATURE_GATES and item.value is not None:
            for name, val in gate_pairs(item.value):
                if name == gate and val.lower() in _TRUE | _FALSE:
                    found = val.lower() in _TRUE
    return found


def with_gate_on(items: Sequence[Arg], gate: str) -> list[Arg]:
    """`items` with `gate=true` in the last `--feature-gates` (other gates kept in
    order), or a `--feature-gates=<gate>=true` appended when there is none."""
    out = list(items)
    for i in range(len(out) - 1, -1, -1):
        item = out[i]
        if isinstance(item, Flag) and item.name == FEATURE_GATES and item.value is not None:
            pairs = [(n, v) for n, v in gate_pairs(item.value) if n != gate]
            pairs.append((gate, "true"))
            out[i] = item.with_value(",".join(f"{n}={v}" for n, v in pairs))
            return out
    out.append(Flag(name=FEATURE_GATES, value=f"{gate}=true", form="equals"))
    return out


def component_version(image: str, options: RenderOptions) -> tuple[KubeVersion | None, str]:
    """The component's version and where it was read (for messages)."""
    if options.kubernetes_version is not None:
        given = kubeversion.parse(options.kubernetes_version)
        if given is None:
            raise UsageError(
                f"--kubernetes-version {options.kubernetes_version!r}: expected vMAJOR.MINOR.PATCH"
            )
        return given, "--kubernetes-version"
    return kubeversion.from_image(image), f"image {image}"


def plan_release(
    component: Component,
    items: Sequence[Arg],
    options: RenderOptions,
    *,
    image: str,
    user_gates: Sequence[str] = (),
) -> tuple[list[Arg], list[str]]:
    """The flag list with the release gate on where asked, and what to say about a
    leader that keeps its Lease. `user_gates` are the user's own `--feature-gates`
    values (--set-flag): a gate they set to false conflicts with the option."""
    wants = options.release_lease_on_exit
    name = component.name
    if component.releases_lease_on_exit:
        if wants:
            raise UsageError(
                f"{OPTION}: {name} releases its Lease on exit in every version; the option "
                "is for kube-controller-manager"
            )
        return list(items), []
    gate, since = component.release_gate, component.release_gate_since
    version, source = component_version(image, options)
    current = gate_setting(items, gate) if gate else None
    if gate and current is True:
        return list(items), []  # already on (the static pod's or the user's own flag)
    several = options.replicas > 1
    if version is None:
        if wants:
            raise UsageError(
                f"{OPTION}: cannot tell the version of {name} from {source} (its tag is no "
                "version); pass --kubernetes-version"
            )
        return list(items), [
            f"{name} up to v1.35 keeps its Lease on SIGTERM (v1.36 releases it with "
            f"{OPTION}): a rollout or eviction of the leader leaves the Lease held until "
            "it expires (lease duration)"
        ] if several else []
    if gate is None or since is None or not version.at_least(*since):
        if wants:
            what = (
                f"has no feature gate {gate} (alpha from v{since[0]}.{since[1]})"
                if (gate and since)
                else "cannot release its Lease on exit"
            )
            raise UsageError(
                f"{OPTION}: {name} {version} ({source}) {what}: it keeps its Lease on SIGTERM"
            )
        return list(items), [
            f"{name} {version} keeps its Lease on SIGTERM: a rollout or eviction of the "
            "leader leaves the Lease held until it expires (lease duration)"
        ] if several else []
    if not wants:
        return list(items), [
            f"{name} {version} keeps its Lease on SIGTERM unless its alpha feature gate "
            f"{gate} is on: a rollout or eviction of the leader leaves the Lease held until "
            f"it expires (lease duration); {OPTION} turns the gate on"
        ] if several else []
    if any(gate_setting([_gates_flag(v)], gate) is False for v in user_gates):
        raise UsageError(f"{OPTION}: conflicts with --set-flag --{FEATURE_GATES} {gate}=false")
    return with_gate_on(items, gate), []


def _gates_flag(value: str) -> Flag:
    return Flag(name=FEATURE_GATES, value=value, form="equals")
