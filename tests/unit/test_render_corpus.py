"""Every manifest of the corpus renders into valid, hardened objects that keep its flags."""

from __future__ import annotations

import base64
import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kubehoist.cli import cli
from kubehoist.components import FileRole, PathKind
from kubehoist.constants import CREDENTIALS_DIR, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from kubehoist.hostfiles import gather_inputs
from kubehoist.manifest import Flag, StaticPod, load_static_pod, parse_flags, split_argv
from kubehoist.render import Rendered, RenderOptions, render, to_json, to_yaml
from kubehoist.render.needs import NOT_FILES, value_paths
from tests.unit.fakenode import ENDPOINT, NOW, FakeNode, Pki
from tests.unit.k8sschema import SchemaError, restricted_violations, validate

CORPUS = Path(__file__).parent / "corpus"
KCM = sorted((CORPUS / "kube-controller-manager").glob("*.yaml"))
SCHEDULER = sorted((CORPUS / "kube-scheduler").glob("*.yaml"))
ALL = KCM + SCHEDULER
REFUSED = sorted((CORPUS / "refused").glob("*.yaml"))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _options(pod: StaticPod, **kw: Any) -> RenderOptions:
    elect = pod.argv.values().get("leader-elect", "true")
    return RenderOptions(now=NOW, force=elect == "false", **kw)


def render_file(path: Path, root: Path, pki: Pki, **kw: Any) -> tuple[StaticPod, Rendered]:
    pod = load_static_pod(path.read_text(), source=path.name)
    options = _options(pod, **kw)
    FakeNode(root, pki).populate(pod, options)
    return pod, render(pod, options, gather_inputs(pod, options, host_root=root))


def _by_kind(rendered: Rendered, kind: str) -> dict[str, Any]:
    return dict(next(o for o in rendered.objects if o["kind"] == kind))


def _output_flags(pod: StaticPod, container: dict[str, Any]) -> tuple[tuple[str, ...], list[Flag]]:
    command = tuple(container["command"]) if "command" in container else None
    args = tuple(container["args"]) if "args" in container else None
    split = split_argv(command=command, args=args, component=pod.component)
    assert not isinstance(split, str), split
    prefix, first = split
    tokens = (command or ()) + (args or ())
    c = pod.component
    items = parse_flags(tokens[first:], bool_flags=c.bool_flags, value_flags=c.value_flags)
    return prefix, [a for a, _ in items if isinstance(a, Flag)]


def test_corpus_is_big_enough_and_cited() -> None:
    assert len(KCM) >= 10
    versions = set()
    for path in ALL:
        head = path.read_text().split("apiVersion:", 1)[0]
        if path.name.startswith("written-"):  # inputs written for these tests
            assert re.search(r"^# Written for these tests: \S", head, re.M), path
            continue
        assert re.search(r"^# Source: https://github\.com/[\w.-]+/[\w.-]+$", head, re.M), path
        assert re.search(r"^#   path: +\S+$", head, re.M), path
        assert re.search(r"^#   commit: [0-9a-f]{40}$", head, re.M), path
        found = re.search(r":v?1\.(\d+)", load_static_pod(path.read_text(), source=path.name).image)
        if found:
            versions.add(int(found.group(1)))
    assert {v for v in versions if 20 <= v <= 39} >= {21, 23, 26, 27, 29, 30, 32}


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_manifest_renders(path: Path, tmp_path: Path, pki: Pki) -> None:
    pod, rendered = render_file(path, tmp_path, pki)
    component = pod.component
    assert [o["kind"] for o in rendered.objects] == ["Secret", "Deployment", "PodDisruptionBudget"]
    for obj in rendered.objects:
        validate(obj)
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY_VALUE
        assert obj["metadata"]["namespace"] == "kube-system"

    deployment = _by_kind(rendered, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert restricted_violations(spec) == []
    assert not any("hostPath" in v for v in spec.get("volumes", []))
    assert spec["hostNetwork"] is False
    assert spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == pod.image
    assert container.get("resources") == pod.container.get("resources")
    port = component.deployment_port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == port
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert "host" not in container[probe]["httpGet"]

    prefix, out_flags = _output_flags(pod, container)
    assert prefix == pod.argv.prefix
    owned = component.owned_flags
    values = {f.name: f.value for f in out_flags}
    assert values["bind-address"] == "0.0.0.0"
    assert values["secure-port"] == str(port)
    assert values["leader-elect"] == "true"

    # Every flag render does not own: same flag, same spelling, same order; only the
    # values of file flags change, and they point into the mounted credentials.
    kept_in = [f for f in pod.argv.flags if f.name not in owned]
    kept_out = [f for f in out_flags if f.name not in owned]
    assert [(f.name, f.form, f.dashes) for f in kept_out] == [
        (f.name, f.form, f.dashes) for f in kept_in
    ]
    secret = _by_kind(rendered, "Secret")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    mounted = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    assert mounted[CREDENTIALS_DIR]["readOnly"] is True
    for before, after in zip(kept_in, kept_out, strict=True):
        role = component.files.get(before.name)
        if role is None or isinstance(component.paths.get(before.name), PathKind):
            found = [
                before.value[a:b]
                for a, b in value_paths(before.value or "")
                if (at := pod.locate(before.value[a:b])) is not None and at.host_path
            ]
            if before.name in component.paths or not found:
                assert after.value == before.value, before.name
            continue
        assert after.value is not None and after.value.startswith(CREDENTIALS_DIR + "/")
        assert after.value.rsplit("/", 1)[1] in data, after

    # No flag names a file on a hostPath volume of the static pod any more (they are
    # all dropped): every such path was carried, or is a path the component writes.
    for flag in out_flags:
        if flag.name in component.paths or flag.name in NOT_FILES or flag.value is None:
            continue
        for a, b in value_paths(flag.value):
            at = pod.locate(flag.value[a:b])
            assert at is None or at.host_path is None, flag
            if flag.value[a:b].startswith(CREDENTIALS_DIR + "/"):
                assert flag.value[a:b].rsplit("/", 1)[1] in data, flag

    # No path of the node's PKI or kubeconfigs is left anywhere in the pod spec.
    text = yaml.safe_dump(spec)
    for node_dir in ("/etc/kubernetes/pki", "/var/lib/minikube/certs", "/srv/kubernetes"):
        assert node_dir not in text

    # Kubeconfigs in the Secret name only mounted files and the control-plane endpoint.
    kubeconfigs = [
        v for f in kept_in if component.files.get(f.name) is FileRole.KUBECONFIG for v in [f.value]
    ]
    assert kubeconfigs or component.config_flag in values
    for key, content in data.items():
        doc = yaml.safe_load(content) if content.lstrip().startswith(b"apiVersion") else None
        if not isinstance(doc, dict) or doc.get("kind") != "Config":
            continue
        for cluster in doc["clusters"]:
            assert cluster["cluster"]["server"] == ENDPOINT, key
        for user in doc["users"]:
            for fld in ("client-certificate", "client-key"):
                if fld in user["user"]:
                    assert user["user"][fld].startswith(CREDENTIALS_DIR + "/")

    # The cluster CA key travels only when a cluster-signing flag needs it.
    signing = [f for f in kept_in if f.name in component.signing_key_flags]
    key_files = {
        f.value.rsplit("/", 1)[1]
        for f in kept_out
        if f.name in component.signing_key_flags and f.value
    }
    assert bool(signing) == bool(key_files)
    if signing:
        assert any("private key" in w for w in rendered.warnings)


@pytest.mark.parametrize("path", KCM[:4] + SCHEDULER, ids=lambda p: p.name)
def test_render_is_deterministic(path: Path, tmp_path: Path, pki: Pki) -> None:
    pod, first = render_file(path, tmp_path / "a", pki)
    # The same files under another host root, rendered again: the same bytes.
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
    options = _options(pod)
    second = render(pod, options, gather_inputs(pod, options, host_root=tmp_path / "b"))
    assert to_yaml(first.objects) == to_yaml(second.objects)
    assert to_json(first.objects) == to_json(second.objects)
    assert first.warnings == second.warnings


def test_schema_check_can_fail(tmp_path: Path, pki: Pki) -> None:
    _, rendered = render_file(KCM[0], tmp_path, pki)
    deployment = _by_kind(rendered, "Deployment")
    validate(deployment)

    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(SchemaError, match="readOnlyRootFileSystem"):
        validate(unknown)

    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(SchemaError, match="replicas"):
        validate(wrong_type)

    no_name = copy.deepcopy(deployment)
    del no_name["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(SchemaError):
        validate(no_name)

    misplaced = copy.deepcopy(_by_kind(rendered, "PodDisruptionBudget"))
    misplaced["spec"]["maxUnavailable"] = [1]
    with pytest.raises(SchemaError):
        validate(misplaced)


def test_restricted_check_can_fail(tmp_path: Path, pki: Pki) -> None:
    path = KCM[0]
    pod = load_static_pod(path.read_text(), source=path.name)
    options = _options(pod, host_network=True, port=10400)
    FakeNode(tmp_path, pki).populate(pod, options)
    rendered = render(pod, options, gather_inputs(pod, options, host_root=tmp_path))
    spec = _by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(spec) == ["hostNetwork"]
    assert any("privileged" in w for w in rendered.warnings)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.name)
def test_corpus_manifest_is_refused_in_one_line(path: Path, tmp_path: Path, pki: Pki) -> None:
    """Each file of corpus/refused says what render must answer (`# Expect:`), and what
    to do to the fake node's files first (`# Node: directory|fifo|missing PATH`)."""
    text = path.read_text()
    expect = re.search(r"^# Expect: (.+)$", text, re.M)
    assert expect, path
    root = tmp_path / "node"
    node = FakeNode(root, pki)
    node.write_admin_conf()
    changes = re.findall(r"^# Node: (directory|fifo|missing) (\S+)$", text, re.M)
    if changes or "cannot read" in expect.group(1):
        pod = load_static_pod(text, source=path.name)
        node.populate(pod, _options(pod))
    for change, node_path in changes:
        local = root / node_path.lstrip("/")
        local.unlink(missing_ok=True)
        if change == "directory":
            local.mkdir(parents=True)
        elif change == "fifo":
            os.mkfifo(local)
    result = CliRunner().invoke(cli, ["render", "-f", str(path), "--host-root", str(root)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.stderr
    assert expect.group(1) in lines[0], lines[0]
    assert not result.stdout
