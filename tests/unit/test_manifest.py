"""Static pod manifests and flag lists: parsed without losing anything."""

from __future__ import annotations

import pytest

from kubehoist.components import KUBE_CONTROLLER_MANAGER as KCM
from kubehoist.components import KUBE_SCHEDULER, detect
from kubehoist.errors import KubehoistError
from kubehoist.manifest import (
    Flag,
    FlagSyntaxError,
    Positional,
    load_static_pod,
    parse_flags,
    unparse,
)


def items(tokens: list[str]) -> list[object]:
    return [a for a, _ in parse_flags(tokens, bool_flags=KCM.bool_flags)]


def test_both_value_forms_bare_flags_and_shorthands() -> None:
    tokens = ["--a=1", "--b", "2", "--leader-elect", "--c", "-v", "4", "--d=", "-x=y"]
    assert items(tokens) == [
        Flag(name="a", value="1", form="equals"),
        Flag(name="b", value="2", form="separate"),
        Flag(name="leader-elect", value=None, form="bare"),
        Flag(name="c", value=None, form="bare"),
        Flag(name="v", value="4", form="separate", dashes="-"),
        Flag(name="d", value="", form="equals"),
        Flag(name="x", value="y", form="equals", dashes="-"),
    ]
    assert unparse(items(tokens)) == tuple(tokens)  # type: ignore[arg-type]


def test_a_bool_flag_never_takes_the_next_token() -> None:
    assert items(["--alsologtostderr", "/usr/local/bin/x"]) == [
        Flag(name="alsologtostderr", value=None, form="bare"),
        Positional(token="/usr/local/bin/x"),
    ]


def test_double_dash_ends_flags() -> None:
    assert items(["--a=1", "--", "--b=2"]) == [
        Flag(name="a", value="1", form="equals"),
        Positional(token="--"),
        Positional(token="--b=2"),
    ]


@pytest.mark.parametrize("token", ["--=1", "---a", "--"])
def test_tokens_that_are_not_flags(token: str) -> None:
    if token == "--":
        assert items([token]) == [Positional(token="--")]
        return
    with pytest.raises(FlagSyntaxError) as info:
        parse_flags(["--ok=1", token], bool_flags=frozenset())
    assert info.value.index == 1


def pod_yaml(container: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kcm\n  namespace: kube-system\n"
        "spec:\n  containers:\n" + container
    )


def test_flags_after_a_wrapper_in_args() -> None:
    pod = load_static_pod(
        pod_yaml(
            "  - name: kube-controller-manager\n    image: img\n    command: [/go-runner]\n"
            "    args: [--log-file=/var/log/kcm.log, --also-stdout,"
            " /usr/local/bin/kube-controller-manager, --kubeconfig, /k.conf, --v=2]\n"
        ),
        source="kcm.yaml",
    )
    assert pod.argv.prefix == (
        "/go-runner",
        "--log-file=/var/log/kcm.log",
        "--also-stdout",
        "/usr/local/bin/kube-controller-manager",
    )
    assert [str(f) for f in pod.argv.flags] == ["--kubeconfig /k.conf", "--v=2"]
    assert pod.argv.field_of_item(0) == "args[3]"
    assert pod.argv.command_and_args() == (
        ("/go-runner",),
        (
            "--log-file=/var/log/kcm.log",
            "--also-stdout",
            "/usr/local/bin/kube-controller-manager",
            "--kubeconfig",
            "/k.conf",
            "--v=2",
        ),
    )


def test_hyperkube_and_container_name_detection() -> None:
    pod = load_static_pod(
        pod_yaml(
            "  - name: whatever\n    image: img\n"
            "    command: [/hyperkube, scheduler, --kubeconfig=/k.conf]\n"
        ),
        source="s.yaml",
    )
    assert pod.component is KUBE_SCHEDULER
    assert pod.argv.prefix == ("/hyperkube", "scheduler")
    assert detect(container_name="kube-controller-manager", argv=[]) is KCM
    assert detect(container_name="etcd", argv=["etcd"]) is None


def test_the_image_entrypoint_with_args_only() -> None:
    pod = load_static_pod(
        pod_yaml("  - name: kube-controller-manager\n    image: img\n    args: [--v=2]\n"),
        source="kcm.yaml",
    )
    assert pod.argv.prefix == ()
    assert pod.argv.command_and_args() == (None, ("--v=2",))


def test_locate_follows_the_longest_mount_and_sub_paths() -> None:
    pod = load_static_pod(
        pod_yaml(
            "  - name: kube-controller-manager\n    image: img\n"
            "    command: [kube-controller-manager]\n"
            "    volumeMounts:\n"
            "    - {name: cfg, mountPath: /etc/kubernetes}\n"
            "    - {name: pki, mountPath: /etc/kubernetes/pki}\n"
            "    - {name: one, mountPath: /etc/one.conf, subPath: deep/one.conf}\n"
            "    - {name: tmp, mountPath: /scratch}\n"
            "  volumes:\n"
            "  - {name: cfg, hostPath: {path: /node/etc}}\n"
            "  - {name: pki, hostPath: {path: /node/pki}}\n"
            "  - {name: one, hostPath: {path: /node/dir}}\n"
            "  - {name: tmp, emptyDir: {}}\n"
        ),
        source="kcm.yaml",
    )
    loc = pod.locate("/etc/kubernetes/pki/ca.crt")
    assert loc is not None and loc.host_path == "/node/pki/ca.crt"
    loc = pod.locate("/etc/kubernetes/controller-manager.conf")
    assert loc is not None and loc.host_path == "/node/etc/controller-manager.conf"
    loc = pod.locate("/etc/one.conf")
    assert loc is not None and loc.host_path == "/node/dir/deep/one.conf"
    loc = pod.locate("/scratch/x")
    assert loc is not None and loc.host_path is None and loc.kind == "emptyDir"
    assert pod.locate("/etc/kubernetesX/a") is None


KCM_I = "  - name: kube-controller-manager\n    image: i\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "kcm.yaml: empty: expected one Pod"),
        ("apiVersion: v2\nkind: Pod\n", "kcm.yaml: apiVersion: expected v1"),
        (
            "apiVersion: v1\nkind: Pod\nspec: 3\n",
            "kcm.yaml: spec: expected a mapping, got a number (3)",
        ),
        (
            pod_yaml("  - name: kube-controller-manager\n    command: [kube-controller-manager]\n"),
            "kcm.yaml: spec.containers[0].image: expected an image reference",
        ),
        (
            pod_yaml(KCM_I + "    command: [kube-controller-manager, 5]\n"),
            "kcm.yaml: spec.containers[0].command[1]: expected a string, got a number (5)",
        ),
        (
            pod_yaml(KCM_I),
            "kcm.yaml: spec.containers[0].command: no command and no args",
        ),
        (
            pod_yaml(KCM_I + "    command: [/bin/wrapper, --x]\n"),
            "kcm.yaml: spec.containers[0].command: does not run kube-controller-manager",
        ),
        (
            pod_yaml(KCM_I + "    command: [kube-controller-manager]\n    args: [--ok, --=3]\n"),
            "kcm.yaml: spec.containers[0].args[1]: '--=3' is not a flag",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(KubehoistError) as info:
        load_static_pod(text, source="kcm.yaml")
    assert info.value.message.startswith(message), info.value.message
    assert "\n" not in info.value.message


def test_lease_honours_resource_flags() -> None:
    assert KCM.lease({}) == ("kube-system", "kube-controller-manager")
    assert KCM.lease({"leader-elect-resource-name": "kcm-b"}) == ("kube-system", "kcm-b")
    assert KUBE_SCHEDULER.lease({}) == ("kube-system", "kube-scheduler")
    assert (KCM.secure_port, KCM.deployment_port) == (10257, 10357)
    assert (KUBE_SCHEDULER.secure_port, KUBE_SCHEDULER.deployment_port) == (10259, 10359)
    assert "cluster-signing-key-file" in KCM.signing_key_flags
    assert not KUBE_SCHEDULER.signing_key_flags


# ----------------------------------------------------------------- pflag's grammar

KCM_CMD = "  - name: kube-controller-manager\n    image: i\n    command:\n"


def kcm_pod(*tokens: str, args: tuple[str, ...] = ()) -> str:
    text = KCM_CMD + "".join(f"    - {t!r}\n" for t in ("kube-controller-manager", *tokens))
    if args:
        text += "    args:\n" + "".join(f"    - {t!r}\n" for t in args)
    return pod_yaml(text)


@pytest.mark.parametrize(
    ("tokens", "args", "field", "needle"),
    [
        (
            ("--kubeconfig=/k.conf", "--leader-elect", "false"),
            (),
            "command[2]",
            "--leader-elect false: --leader-elect is a boolean flag, which takes a value only "
            "as --leader-elect=VALUE, so the component takes 'false' for a stray argument and "
            "refuses to start; write --leader-elect=false",
        ),
        (
            ("--kubeconfig=/k.conf",),
            ("--use-service-account-credentials", "true", "--v=2"),
            "args[0]",
            "--use-service-account-credentials true: --use-service-account-credentials is a "
            "boolean flag",
        ),
        (
            ("--kubeconfig=/k.conf", "--profiling", "/etc/kubernetes/x"),
            (),
            "command[2]",
            "--profiling /etc/kubernetes/x: --profiling is a boolean flag",
        ),
        (
            ("start", "--kubeconfig=/k.conf"),
            (),
            "command[1]",
            "'start' is a stray argument: the component takes none and refuses to start",
        ),
        (
            ("--kubeconfig=/k.conf", "--", "--v=2"),
            (),
            "command[3]",
            "'--v=2' is a stray argument",
        ),
        (
            ("--kubeconfig",),
            (),
            "command[1]",
            "--kubeconfig takes a value (--kubeconfig=VALUE); the component refuses to start",
        ),
        (
            ("--kubeconfig=/k.conf", "--frobnicate", "yes"),
            (),
            "command[2]",
            "--frobnicate yes: --frobnicate is not a flag render knows, so 'yes' may be its "
            "value or a stray argument (which the component refuses); if it is the value, "
            "write --frobnicate=yes",
        ),
    ],
)
def test_what_the_component_would_refuse_is_refused(
    tokens: tuple[str, ...], args: tuple[str, ...], field: str, needle: str
) -> None:
    with pytest.raises(KubehoistError) as info:
        load_static_pod(kcm_pod(*tokens, args=args), source="kcm.yaml")
    message = info.value.message
    assert message.startswith(f"kcm.yaml: spec.containers[0].{field}: {needle}"), message
    assert "\n" not in message


def test_value_flags_take_the_next_word_whatever_it_is() -> None:
    pod = load_static_pod(
        kcm_pod(
            "--kubeconfig", "/etc/kubernetes/controller-manager.conf",
            "--leader-elect-resource-name", "-kcm-",
            "--concurrent_rc_syncs", "5",
            "-v", "2",
            "--leader-elect",
            "--profiling=false",
            "--frobnicate",
            "--",
            "",
        ),
        source="kcm.yaml",
    )  # fmt: skip
    assert [" ".join(a.tokens()) for a in pod.argv.items] == [
        "--kubeconfig /etc/kubernetes/controller-manager.conf",
        "--leader-elect-resource-name -kcm-",
        "--concurrent_rc_syncs 5",
        "-v 2",
        "--leader-elect",
        "--profiling=false",
        "--frobnicate",
        "--",
        "",
    ]
    assert pod.argv.values()["kubeconfig"] == "/etc/kubernetes/controller-manager.conf"


def test_the_flag_tables() -> None:
    for component in (KCM, KUBE_SCHEDULER):
        assert not component.bool_flags & component.value_flags
        assert set(component.files) <= component.value_flags
        assert set(component.paths) <= component.value_flags
        assert component.flag_kind("leader-elect") == "bool"
        assert component.flag_kind("add_dir_header") == "bool"
        assert component.flag_kind("kubeconfig") == "value"
        assert component.flag_kind("frobnicate") == "unknown"
    assert KCM.flag_kind("use-service-account-credentials") == "bool"
    assert KUBE_SCHEDULER.flag_kind("policy-config-file") == "value"
    assert KUBE_SCHEDULER.flag_kind("use-service-account-credentials") == "unknown"
