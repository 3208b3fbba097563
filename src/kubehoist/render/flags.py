"""The Deployment's flag list: the static pod's flags, the user's edits, and render's own.

Every flag render does not own stays verbatim and in place. Render owns
`--bind-address`, `--secure-port` and `--leader-elect` (and the leader-election timing
flags when the user asks to tune them); it changes them in place where they appear
and appends them where they do not. Flags whose values are files are remapped later,
in place, by the credentials step.

Leader-election timing is validated as the component validates it (client-go's
`NewLeaderElector`): lease-duration > renew-deadline > 1.2 x retry-period, all > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubehoist.components import Component
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.manifest import Arg, Flag, StaticPod, flag_values
from kubehoist.render.durations import format_duration, parse_duration
from kubehoist.render.options import RenderOptions
from kubehoist.render.releasegate import FEATURE_GATES, plan_release

JITTER_FACTOR = 1.2
"""client-go leaderelection.JitterFactor: retries may come up to 20% late."""
DEFAULT_LEASE_DURATION = "15s"
DEFAULT_RENEW_DEADLINE = "10s"
DEFAULT_RETRY_PERIOD = "2s"


@dataclass(frozen=True, kw_only=True)
class FlagPlan:
    """The Deployment's flags before file paths are remapped."""

    items: tuple[Arg, ...]
    port: int
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class _Edit:
    flag: Flag
    origin: str


def parse_set_flag(text: str) -> Flag:
    """`--name=value` (or bare `--name`) as given to --set-flag."""
    body = text.lstrip("-")
    dashes = text[: len(text) - len(body)] or "--"
    name, eq, value = body.partition("=")
    if not name or dashes not in ("-", "--") or any(c.isspace() for c in name):
        raise UsageError(f"--set-flag {text!r}: expected --name=value")
    if eq:
        return Flag(name=name, value=value, form="equals", dashes=dashes)
    return Flag(name=name, value=None, form="bare", dashes=dashes)


def parse_drop_flag(text: str) -> str:
    """The flag name given to --drop-flag (`--name`, `name`; no value)."""
    name = text.lstrip("-")
    if not name or "=" in name or any(c.isspace() for c in name):
        raise UsageError(f"--drop-flag {text!r}: expected --name (without a value)")
    return name


def _last_index(items: Sequence[Arg], name: str) -> int | None:
    found = None
    for i, item in enumerate(items):
        if isinstance(item, Flag) and item.name == name:
            found = i
    return found


def _set(items: list[Arg], flag: Flag) -> bool:
    """Give every occurrence of flag.name flag's value, or append it; True if changed."""
    changed = False
    present = False
    for i, item in enumerate(items):
        if isinstance(item, Flag) and item.name == flag.name:
            present = True
            if flag.value is None or (flag.value == "true" and item.value is None):
                if item.value is not None and item.value != "true":
                    items[i] = item.with_value("true")
                    changed = True
            elif item.value != flag.value:
                items[i] = item.with_value(flag.value)
                changed = True
    if not present:
        items.append(flag)
        changed = True
    return changed


def _shown(text: str) -> str:
    """User input as an error message shows it: control characters escaped, so that
    an error always stays on one line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _user_edits(options: RenderOptions, component: Component) -> tuple[list[_Edit], set[str]]:
    sets: dict[str, _Edit] = {}
    for text in options.set_flags:
        flag = parse_set_flag(text)
        if flag.name in component.owned_flags:
            hint = {
                "secure-port": "use --port",
                "bind-address": "render binds 0.0.0.0 so probes and peers can reach the pod",
                "leader-elect": "render always sets --leader-elect=true",
            }.get(flag.name, "render sets it")
            raise UsageError(f"--set-flag {_shown(text)}: render owns --{flag.name} ({hint})")
        if flag.value is None and component.flag_kind(flag.name) == "value":
            raise UsageError(
                f"--set-flag {_shown(text)}: --{flag.name} takes a value (--name=VALUE)"
            )
        previous = sets.get(flag.name)
        if previous is not None and previous.flag.value != flag.value:
            raise UsageError(f"--set-flag {_shown(text)}: conflicts with {previous.origin}")
        sets[flag.name] = _Edit(flag=flag, origin=f"--set-flag {_shown(text)}")
    drops: set[str] = set()
    for text in options.drop_flags:
        name = parse_drop_flag(text)
        if name in component.owned_flags:
            raise UsageError(f"--drop-flag {_shown(text)}: render owns --{name}")
        if name in sets:
            raise UsageError(f"--drop-flag {_shown(text)}: conflicts with {sets[name].origin}")
        drops.add(name)
    timing = {
        component.lease_duration_flag: ("--lease-duration", options.lease_duration),
        component.renew_deadline_flag: ("--renew-deadline", options.renew_deadline),
        component.retry_period_flag: ("--retry-period", options.retry_period),
    }
    for flag_name, (option, value) in timing.items():
        if value is None:
            continue
        if flag_name in sets:
            raise UsageError(f"{option} {value}: conflicts with {sets[flag_name].origin}")
        if flag_name in drops:
            raise UsageError(f"{option} {value}: conflicts with --drop-flag --{flag_name}")
        sets[flag_name] = _Edit(
            flag=Flag(name=flag_name, value=value, form="equals"), origin=f"{option} {value}"
        )
    return list(sets.values()), drops


def plan_flags(pod: StaticPod, options: RenderOptions) -> FlagPlan:
    """Apply the user's edits and render's own flags to the static pod's flags."""
    component = pod.component
    warnings: list[str] = []
    source_items = pod.argv.items
    source_values = flag_values(source_items)

    # A static pod that does not take part in the election would keep running every
    # controller next to the Deployment's leader until it is retired.
    elect = source_values.get(component.leader_elect_flag, "true").lower()
    if elect not in ("true", "1", "t"):
        at = _last_index(source_items, component.leader_elect_flag)
        assert at is not None
        message = (
            f"--{component.leader_elect_flag}={elect}: the static pod runs without leader "
            "election, so it would run every controller next to the Deployment's leader"
        )
        if not options.force:
            raise pod.flag_error(at, message + "; refusing (--force renders anyway)")
        warnings.append(
            f"{pod.source}: {message}; rendering anyway (--force): retire the static pod "
            "before the Deployment's pods start"
        )

    port = options.port if options.port is not None else component.deployment_port
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: not a port number")
    if options.host_network:
        static_port_text = source_values.get("secure-port", str(component.secure_port))
        try:
            static_port = int(static_port_text)
        except ValueError:
            static_port = component.secure_port
        if static_port == port:
            raise UsageError(
                f"--port {port}: collides with the static pod's --secure-port={static_port} "
                "on the host network; choose another --port"
            )

    edits, drops = _user_edits(options, component)
    items: list[Arg] = list(source_items)
    for name in sorted(drops):
        if not any(isinstance(i, Flag) and i.name == name for i in items):
            warnings.append(f"--drop-flag --{name}: not in {pod.source}; nothing dropped")
    items = [i for i in items if not (isinstance(i, Flag) and i.name in drops)]
    for edit in edits:
        _set(items, edit.flag)
    items, said = plan_release(
        component,
        items,
        options,
        image=options.image or pod.image,
        user_gates=[e.flag.value for e in edits if e.flag.name == FEATURE_GATES and e.flag.value],
    )
    warnings.extend(said)
    _set(items, Flag(name="bind-address", value="0.0.0.0", form="equals"))
    _set(items, Flag(name="secure-port", value=str(port), form="equals"))
    _set(items, Flag(name=component.leader_elect_flag, value="true", form="equals"))

    _validate_leader_election(pod, items, options)

    values = flag_values(items)
    master = values.get(component.master_flag)
    if master:
        warnings.append(
            f"--{component.master_flag}={master} overrides the kubeconfig's server and is "
            "kept as is: make sure a pod on any node can reach it"
        )
    config = values.get(component.config_flag) if component.config_flag else None
    if config:
        warnings.append(
            f"--{component.config_flag}={config}: leader election and the kubeconfig may be "
            "set in that file too; render checks and rewrites only its kubeconfig path"
        )
    if "kubeconfig" not in values and not master and not config:
        raise pod.error(
            pod.argv.flags_field,
            "no --kubeconfig: a Deployment pod would have no credentials for the API server",
        )
    return FlagPlan(items=tuple(items), port=port, warnings=tuple(warnings))


def _validate_leader_election(pod: StaticPod, items: Sequence[Arg], options: RenderOptions) -> None:
    component = pod.component
    by_option = {
        component.lease_duration_flag: options.lease_duration,
        component.renew_deadline_flag: options.renew_deadline,
        component.retry_period_flag: options.retry_period,
    }
    user_set = {f.name: f.value for f in map(parse_set_flag, options.set_flags)}
    defaults = {
        component.lease_duration_flag: DEFAULT_LEASE_DURATION,
        component.renew_deadline_flag: DEFAULT_RENEW_DEADLINE,
        component.retry_period_flag: DEFAULT_RETRY_PERIOD,
    }
    values = flag_values(items)
    parsed: dict[str, int] = {}

    def where(name: str) -> str:
        if by_option.get(name) is not None:
            return (
                "--"
                + {
                    component.lease_duration_flag: "lease-duration",
                    component.renew_deadline_flag: "renew-deadline",
                    component.retry_period_flag: "retry-period",
                }[name]
            )
        if name in user_set:
            return f"--set-flag --{name}"
        at = _last_index(pod.argv.items, name)
        if at is not None:
            return f"{pod.source}: {pod.field(pod.argv.field_of_item(at))}"
        return f"the default --{name}"

    def fail(name: str, message: str) -> KubehoistError:
        origin = where(name)
        if origin.startswith("--"):
            return UsageError(f"{origin}: {message}")
        return KubehoistError(f"{origin}: {message}")

    for name, default in defaults.items():
        text = values.get(name, default)
        try:
            ns = parse_duration(text)
        except ValueError:
            raise fail(name, f"--{name}={_shown(text)}: not a duration (e.g. 15s, 1m30s)") from None
        if ns <= 0:
            raise fail(name, f"--{name}={_shown(text)}: must be greater than zero")
        parsed[name] = ns
    lease = parsed[component.lease_duration_flag]
    renew = parsed[component.renew_deadline_flag]
    retry = parsed[component.retry_period_flag]
    if lease <= renew:
        raise fail(
            component.renew_deadline_flag,
            f"lease duration {format_duration(lease)} must be greater than renew deadline "
            f"{format_duration(renew)} (the component refuses to start otherwise)",
        )
    if renew <= int(JITTER_FACTOR * float(retry)):
        raise fail(
            component.retry_period_flag,
            f"renew deadline {format_duration(renew)} must be greater than "
            f"{JITTER_FACTOR} x retry period {format_duration(retry)} "
            "(the component refuses to start otherwise)",
        )
