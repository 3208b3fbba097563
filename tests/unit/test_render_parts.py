"""The renderer's parts on their own: durations, Secret keys, server choice, mutators."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kubehoist.errors import KubehoistError
from kubehoist.manifest import load_static_pod
from kubehoist.render import Inputs, RenderOptions, mutators, render
from kubehoist.render.credentials import choose_server, secret_keys
from kubehoist.render.durations import parse_duration
from kubehoist.render.kubeconfig import is_loopback, load, rewrite
from tests.unit.fakenode import NOW, Pki


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("15s", 15_000_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("300ms", 300_000_000),
        ("2us", 2_000),
        ("2µs", 2_000),
        ("0", 0),
        ("-1s", -1_000_000_000),
        (".5s", 500_000_000),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "15", "s", "1x", "1s2", "--1s", "1.s.", "1e3s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_secret_keys_are_basenames_with_parents_only_on_clashes() -> None:
    keys = secret_keys(
        [
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/pki/etcd/ca.crt",
            "/etc/kubernetes/controller-manager.conf",
            "/srv/kubernetes/kube-controller-manager/ca.crt",
            "/weird/na me@.key",
        ]
    )
    assert keys == {
        "/etc/kubernetes/controller-manager.conf": "controller-manager.conf",
        "/etc/kubernetes/pki/ca.crt": "pki-ca.crt",
        "/etc/kubernetes/pki/etcd/ca.crt": "etcd-ca.crt",
        "/srv/kubernetes/kube-controller-manager/ca.crt": "kube-controller-manager-ca.crt",
        "/weird/na me@.key": "na_me_.key",
    }
    assert secret_keys(reversed(list(keys))) == keys


POD = load_static_pod(
    "apiVersion: v1\nkind: Pod\nmetadata: {name: kcm}\nspec:\n  containers:\n"
    "  - name: kube-controller-manager\n    image: i\n"
    "    command: [kube-controller-manager, --kubeconfig=/k.conf]\n",
    source="kcm.yaml",
)


def kubeconfig_doc(server: str) -> dict[str, Any]:
    return load(Pki().kubeconfig(server=server), name="/k.conf")


def test_server_choice() -> None:
    opts = RenderOptions(now=NOW)
    node = "https://10.0.0.11:6443"
    lb = "https://lb:6443"
    doc = kubeconfig_doc(node)
    # --server wins
    server, said = choose_server(
        name="/k.conf", doc=doc, options=RenderOptions(now=NOW, server=lb), inputs=Inputs(), pod=POD
    )
    assert server == lb and "(--server)" in said[0]
    # the control-plane endpoint replaces one node's address
    inputs = Inputs(control_plane_endpoint=lb, endpoint_source="/etc/kubernetes/admin.conf")
    server, said = choose_server(name="/k.conf", doc=doc, options=opts, inputs=inputs, pod=POD)
    assert server == lb and "admin.conf" in said[0]
    # already the endpoint: kept, and said so
    server, said = choose_server(
        name="/k.conf", doc=kubeconfig_doc(lb), options=opts, inputs=inputs, pod=POD
    )
    assert server is None and "keeps server https://lb:6443, the control-plane endpoint" in said[0]
    # nothing known: kept, with a warning
    server, said = choose_server(name="/k.conf", doc=doc, options=opts, inputs=Inputs(), pod=POD)
    assert server is None and "losing that node" in said[0]
    # loopback cannot work from a pod
    with pytest.raises(KubehoistError, match="loopback"):
        choose_server(
            name="/k.conf", doc=kubeconfig_doc("https://localhost:6443"), options=opts,
            inputs=Inputs(), pod=POD,
        )  # fmt: skip
    assert is_loopback("https://[::1]:6443") and not is_loopback("https://10.0.0.1")


def test_kubeconfig_rewrite_maps_files_and_server() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://a:6443", "certificate-authority": "pki/ca.crt"},
            }
        ],
        "users": [
            {"name": "u", "user": {"client-certificate": "/abs/u.crt", "client-key": "/abs/u.key"}}
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    out = yaml.safe_load(
        rewrite(
            doc,
            paths={"/etc/k/pki/ca.crt": "/m/ca.crt", "/abs/u.crt": "/m/u.crt"},
            base="/etc/k",
            server="https://lb:6443",
        )
    )
    assert out["clusters"][0]["cluster"] == {
        "server": "https://lb:6443",
        "certificate-authority": "/m/ca.crt",
    }
    assert out["users"][0]["user"] == {"client-certificate": "/m/u.crt", "client-key": "/abs/u.key"}


def test_mutators_are_pure_and_ordered() -> None:
    options = RenderOptions(now=NOW, secret_name="s", secret_exists=True)
    ctx = mutators.PodContext(
        pod=POD, options=options, command=("kube-controller-manager",), args=None,
        port=10357, image="i", secret_name="s", writable_dirs=("/var/log",),
    )  # fmt: skip
    spec = dict(POD.spec)
    before = yaml.safe_dump(spec)
    out, said = mutators.apply(spec, ctx)
    assert yaml.safe_dump(spec) == before  # the input is not touched
    assert out["containers"][0]["volumeMounts"] == [
        {
            "name": "kubehoist-credentials",
            "mountPath": "/etc/kubehoist/credentials",
            "readOnly": True,
        },
        {"name": "kubehoist-writable-0", "mountPath": "/var/log"},
    ]
    assert out["dnsPolicy"] == "Default"
    assert any("/var/log" in w for w in said)
    for mutate in mutators.MUTATORS:
        assert mutate.__doc__, mutate.__name__


def test_replicas_and_server_options_are_checked() -> None:
    with pytest.raises(KubehoistError, match="--replicas 0"):
        render(POD, RenderOptions(now=NOW, replicas=0, secret_name="s", secret_exists=True))
    with pytest.raises(KubehoistError, match="--server http://x"):
        render(POD, RenderOptions(now=NOW, server="http://x", secret_name="s", secret_exists=True))


def test_the_http2_health_check_is_tightened_and_the_static_pods_values_kept() -> None:
    options = RenderOptions(now=NOW, secret_name="s", secret_exists=True)
    ctx = mutators.PodContext(
        pod=POD, options=options, command=("kube-controller-manager",), args=None,
        port=10357, image="i", secret_name="s", writable_dirs=(),
    )  # fmt: skip
    out, _ = mutators.apply(dict(POD.spec), ctx)
    env = {e["name"]: e["value"] for e in out["containers"][0]["env"]}
    assert env["HTTP2_READ_IDLE_TIMEOUT_SECONDS"] == "5"
    assert env["HTTP2_PING_TIMEOUT_SECONDS"] == "3"
    # Both together stay within the default renew deadline (10 s).
    assert (
        int(env["HTTP2_READ_IDLE_TIMEOUT_SECONDS"]) + int(env["HTTP2_PING_TIMEOUT_SECONDS"]) <= 15
    )

    spec = copy.deepcopy(dict(POD.spec))
    spec["containers"][0]["env"] = [
        {"name": "HTTP2_PING_TIMEOUT_SECONDS", "value": "2"},
        {"name": "TZ", "value": "UTC"},
    ]
    out, _ = mutators.bound_dead_connections(spec, ctx)
    assert out["containers"][0]["env"] == [
        {"name": "HTTP2_PING_TIMEOUT_SECONDS", "value": "2"},
        {"name": "TZ", "value": "UTC"},
        {"name": "HTTP2_READ_IDLE_TIMEOUT_SECONDS", "value": "5"},
    ]
    assert spec["containers"][0]["env"][0]["value"] == "2"  # the input is not touched
