"""Property tests: render never fails outside its clean errors, and never drops or
reorders a flag it does not own, whatever the flags and wherever they sit."""

from __future__ import annotations

import string
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubehoist.components import KUBE_CONTROLLER_MANAGER as KCM
from kubehoist.constants import CREDENTIALS_DIR
from kubehoist.errors import KubehoistError
from kubehoist.manifest import (
    Flag,
    FlagSyntaxError,
    load_static_pod,
    parse_flags,
    split_argv,
    unparse,
)
from kubehoist.render import RenderOptions, render
from tests.unit.fakenode import NOW

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = RenderOptions(now=NOW, secret_name="kcm-credentials", secret_exists=True)
KUBECONFIG = Flag(name="kubeconfig", value="/etc/kubernetes/controller-manager.conf", form="equals")

_reserved = (
    set(KCM.owned_flags) | set(KCM.files) | set(KCM.paths) | {"master", "config", "kubeconfig"}
)
names = st.text(string.ascii_lowercase + "-", min_size=1, max_size=24).filter(
    lambda n: (
        not n.startswith("-")
        and not n.endswith("-")
        and n not in _reserved
        and not n.startswith("leader-elect")
    )
)
values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)


value_names = st.sampled_from(
    sorted(n for n in KCM.value_flags if n not in _reserved and not n.startswith("leader-elect"))
)


@st.composite
def user_flags(draw: st.DrawFn) -> Flag:
    """A flag as pflag reads it: a boolean or a flag render does not know as `--f` or
    `--f=v`, a known value flag as `--f=v` or `--f v` (any v: it takes the next token)."""
    name = draw(st.one_of(names, value_names))
    dashes = draw(st.sampled_from(["--", "--", "-"]))
    if KCM.flag_kind(name) == "value":
        form = draw(st.sampled_from(["equals", "separate"]))
    else:
        form = draw(st.sampled_from(["equals", "bare"]))
    if form == "bare":
        return Flag(name=name, value=None, form="bare", dashes=dashes)
    return Flag(name=name, value=draw(values), form=form, dashes=dashes)


LAYOUTS = ("command", "args", "go-runner", "hyperkube", "entrypoint")


def manifest(layout: str, flags: list[Flag]) -> str:
    tokens = list(unparse(flags))
    container: dict[str, Any] = {
        "name": "kube-controller-manager",
        "image": "registry.k8s.io/kube-controller-manager:v1.31.0",
    }
    if layout == "command":
        container["command"] = ["kube-controller-manager", *tokens]
    elif layout == "args":
        container["command"] = ["/usr/local/bin/kube-controller-manager"]
        container["args"] = tokens
    elif layout == "go-runner":
        container["command"] = ["/go-runner"]
        container["args"] = [
            "--log-file=/var/log/kcm.log",
            "--also-stdout",
            "/usr/local/bin/kube-controller-manager",
            *tokens,
        ]
    elif layout == "hyperkube":
        container["command"] = ["/hyperkube", "controller-manager", *tokens]
    else:
        container["args"] = tokens
    container["volumeMounts"] = [{"name": "k8s", "mountPath": "/etc/kubernetes", "readOnly": True}]
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
        "spec": {
            "hostNetwork": True,
            "containers": [container],
            "volumes": [{"name": "k8s", "hostPath": {"path": "/etc/kubernetes"}}],
        },
    }
    return yaml.safe_dump(doc)


def output_flags(obj: dict[str, Any]) -> tuple[tuple[str, ...], list[Flag]]:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    command = tuple(container["command"]) if "command" in container else None
    args = tuple(container["args"]) if "args" in container else None
    split = split_argv(command=command, args=args, component=KCM)
    assert not isinstance(split, str)
    prefix, first = split
    tokens = (command or ()) + (args or ())
    parsed = parse_flags(tokens[first:], bool_flags=KCM.bool_flags, value_flags=KCM.value_flags)
    return prefix, [a for a, _ in parsed if isinstance(a, Flag)]


@SETTINGS
@given(
    layout=st.sampled_from(LAYOUTS),
    before=st.lists(user_flags(), max_size=8),
    after=st.lists(user_flags(), max_size=8),
)
def test_flags_render_does_not_own_keep_their_order_and_spelling(
    layout: str, before: list[Flag], after: list[Flag]
) -> None:
    flags = [*before, KUBECONFIG, *after]
    pod = load_static_pod(manifest(layout, flags), source="kcm.yaml")
    rendered = render(pod, OPTIONS)
    deployment = next(o for o in rendered.objects if o["kind"] == "Deployment")
    prefix, out = output_flags(dict(deployment))
    assert prefix == pod.argv.prefix
    kept = [f for f in out if f.name not in KCM.owned_flags]
    expected = [
        f if f.name != "kubeconfig" else f.with_value(f"{CREDENTIALS_DIR}/controller-manager.conf")
        for f in flags
        if f.name not in KCM.owned_flags
    ]
    assert kept == expected
    values = {f.name: f.value for f in out}
    assert values["leader-elect"] == "true"
    assert values["bind-address"] == "0.0.0.0"
    assert values["secure-port"] == "10357"


any_names = st.one_of(
    names,
    st.sampled_from(
        sorted(
            KCM.owned_flags
            | set(KCM.files)
            | set(KCM.paths)
            | {
                "master",
                "leader-elect-lease-duration",
                "leader-elect-renew-deadline",
                "leader-elect-retry-period",
                "leader-elect-resource-name",
            }
        )
    ),
)
any_tokens = st.lists(
    st.one_of(
        st.builds(lambda n, v: f"--{n}={v}", any_names, values),
        st.builds(lambda n: f"--{n}", any_names),
        values,
        st.sampled_from(["--", "-", "--=x", "---x", "/etc/kubernetes/a.conf", "true", "15s"]),
    ),
    max_size=14,
)


@SETTINGS
@given(
    layout=st.sampled_from(LAYOUTS),
    tokens=any_tokens,
    set_flags=st.lists(st.builds(lambda n, v: f"--{n}={v}", any_names, values), max_size=3),
    drop_flags=st.lists(st.builds(lambda n: f"--{n}", any_names), max_size=2),
    port=st.integers(min_value=-5, max_value=70000),
    host_network=st.booleans(),
    force=st.booleans(),
)
def test_render_fails_only_with_clean_errors(
    layout: str,
    tokens: list[str],
    set_flags: list[str],
    drop_flags: list[str],
    port: int,
    host_network: bool,
    force: bool,
) -> None:
    doc = yaml.safe_load(manifest(layout, []))
    container = doc["spec"]["containers"][0]
    key = "args" if "args" in container else "command"
    container[key] = [*container.get(key, []), *tokens]
    options = RenderOptions(
        now=NOW,
        secret_name="s",
        secret_exists=True,
        set_flags=tuple(set_flags),
        drop_flags=tuple(drop_flags),
        port=port,
        host_network=host_network,
        force=force,
    )
    try:
        pod = load_static_pod(yaml.safe_dump(doc), source="kcm.yaml")
        rendered = render(pod, options)
    except KubehoistError as exc:
        assert exc.message and "\n" not in exc.message
        return
    for obj in rendered.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubehoist"


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
pod_keys = st.sampled_from(
    ["apiVersion", "kind", "metadata", "spec", "containers", "command", "args", "image",
     "name", "volumes", "volumeMounts", "hostPath", "path", "mountPath", "hostNetwork",
     "labels", "namespace"]
)  # fmt: skip


@st.composite
def mangled_manifests(draw: st.DrawFn) -> Any:
    """A valid manifest with a few values replaced by arbitrary ones, at any depth."""
    doc: Any = yaml.safe_load(manifest("command", [KUBECONFIG]))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        node = doc
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            if isinstance(node, dict) and node:
                child = node[draw(st.sampled_from(sorted(node)))]
                if isinstance(child, dict | list):
                    node = child
            elif isinstance(node, list) and node:
                child = node[draw(st.integers(0, len(node) - 1))]
                if isinstance(child, dict | list):
                    node = child
        if isinstance(node, dict):
            node[draw(st.one_of(pod_keys, st.text(max_size=6)))] = draw(json_values)
        elif isinstance(node, list):
            node.append(draw(json_values))
    return doc


@SETTINGS
@given(doc=st.one_of(mangled_manifests(), json_values))
def test_any_document_parses_or_fails_cleanly(doc: Any) -> None:
    text = yaml.safe_dump(doc)
    try:
        pod = load_static_pod(text, source="kcm.yaml")
        render(pod, OPTIONS)
    except KubehoistError as exc:
        assert exc.message.startswith("kcm.yaml: "), exc.message
        assert "\n" not in exc.message


@SETTINGS
@given(
    st.lists(
        st.one_of(
            values,
            st.sampled_from(["--a", "-b", "--c=d", "--", "-", "x", "--kubeconfig", "--profiling"]),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_flag_parsing_round_trips_exactly(tokens: list[str], strict: bool) -> None:
    try:
        parsed = parse_flags(
            tokens, bool_flags=KCM.bool_flags, value_flags=KCM.value_flags if strict else None
        )
    except FlagSyntaxError as exc:
        assert 0 <= exc.index < len(tokens)
        return
    assert unparse(a for a, _ in parsed) == tuple(tokens)
    starts = [s for _, s in parsed]
    assert starts == sorted(starts)
