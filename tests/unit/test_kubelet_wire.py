"""The lab kubelet's requests on the wire (a faked API transport), the launch spec's
JSON, and path resolution inside a container's root."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx2

from kubehoist.lab.kubelet.api import KubeletApi
from kubehoist.lab.kubelet.launcher import LaunchSpec, Mount, _inside
from kubehoist.lab.kubelet.podspec import parse_pod

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: node, user: {token: t}}]
contexts: [{name: lab, context: {cluster: lab, user: node}}]
current-context: lab
"""


def fake_api(tmp_path: Path, answer: dict[str, Any]) -> tuple[KubeletApi, list[httpx2.Request]]:
    conf = tmp_path / "kubelet.conf"
    conf.write_text(KUBECONFIG)
    api = KubeletApi(conf, "worker-1")
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=answer)

    inner = api.client._client._client
    api.client._client._client = httpx2.AsyncClient(
        base_url=inner.base_url, transport=httpx2.MockTransport(handler)
    )
    return api, seen


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}


def test_status_is_a_merge_patch_of_the_status_subresource_with_the_uid(tmp_path: Path) -> None:
    api, seen = fake_api(tmp_path, POD)
    asyncio.run(api.patch_status("ns", "p", "uid-1", {"phase": "Running"}))
    (req,) = seen
    assert req.method == "PATCH"
    assert req.url.path == "/api/v1/namespaces/ns/pods/p/status"
    assert req.headers["content-type"] == "application/merge-patch+json"
    assert req.url.params["fieldManager"] == "kubehoist-lab-kubelet"
    assert json.loads(req.content) == {"metadata": {"uid": "uid-1"}, "status": {"phase": "Running"}}


def test_delete_is_immediate(tmp_path: Path) -> None:
    api, seen = fake_api(tmp_path, {"kind": "Status", "status": "Success"})
    asyncio.run(api.delete_pod("ns", "p"))
    (req,) = seen
    assert (req.method, req.url.path) == ("DELETE", "/api/v1/namespaces/ns/pods/p")
    assert req.url.params["gracePeriodSeconds"] == "0"


def test_token_request_is_bound_to_the_pod(tmp_path: Path) -> None:
    answer = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": []},
        "status": {"token": "tok", "expirationTimestamp": "2026-01-01T00:00:00Z"},
    }
    api, seen = fake_api(tmp_path, answer)
    pod = parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "image": "i"}]},
        }
    )
    assert asyncio.run(api.token(pod, "", 3607)) == "tok"
    (req,) = seen
    assert (req.method, req.url.path) == ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token")
    body = json.loads(req.content)
    assert body["spec"]["boundObjectRef"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "name": "p",
        "uid": "u",
    }
    assert body["spec"]["expirationSeconds"] == 3607


def test_launch_spec_round_trips() -> None:
    spec = LaunchSpec(
        argv=("kube-controller-manager", "--v=2"),
        env=(("PATH", "/bin"),),
        rootfs="/r",
        hostname="cp-1",
        pid_file="/p",
        netns="/run/netns/x",
        image_files=(Mount("/bins/kcm", "/usr/local/bin/kube-controller-manager", True),),
        mounts=(Mount("/lab/n/etc/kubernetes/pki", "/etc/kubernetes/pki", True),),
        run_as_user=1000,
        read_only_root=True,
    )
    assert LaunchSpec.from_json(spec.to_json()) == spec


def test_paths_resolve_inside_the_container_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    os.symlink("/run", root / "var" / "run")  # as Debian's /var/run
    os.symlink("../run", root / "var" / "rel")
    os.symlink("/../../..", root / "escape")
    r = str(root)
    assert _inside(r, "/var/run/secrets/x") == f"{r}/run/secrets/x"
    assert _inside(r, "/var/rel/a") == f"{r}/run/a"
    assert _inside(r, "/escape/etc/shadow") == f"{r}/etc/shadow"
    assert _inside(r, "/../../etc") == f"{r}/etc"
