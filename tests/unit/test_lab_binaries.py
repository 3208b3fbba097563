"""Where the lab's binaries and the tests' promtool are, and which versions are built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubehoist.errors import KubehoistError
from kubehoist.lab import binaries


def test_promtool_is_cached_by_version_beside_the_lab_binaries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBEHOIST_BIN_DIR", raising=False)
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path))
    bins = binaries.locate()
    assert bins.path("promtool") == (
        tmp_path / "bin" / f"promtool-{binaries.PROMTOOL_VERSION}" / "promtool"
    )
    # not a lab binary: a lab needs none, `missing` does not ask for it
    assert "promtool" not in bins.missing()
    # Ready binaries elsewhere: their promtool if they have one, else the cache's.
    ready = tmp_path / "ready"
    ready.mkdir()
    monkeypatch.setenv("KUBEHOIST_BIN_DIR", str(ready))
    assert binaries.locate().path("promtool") == bins.path("promtool")
    (ready / "promtool").write_text("#!/bin/sh\necho 'promtool, version 2.55.1'\n")
    (ready / "promtool").chmod(0o755)
    assert binaries.locate().path("promtool") == ready / "promtool"
    with pytest.raises(KubehoistError, match=r"version 2\.55\.1, want 3\.0\.0"):
        binaries.ensure_tools(progress=False)


def test_the_consumer_module_pins_the_version_the_cache_is_keyed_by() -> None:
    gomod = (binaries.GOMOD_DIR / "promtool" / "go.mod").read_text()
    pinned = re.search(r"github\.com/prometheus/prometheus (v\S+)", gomod)
    assert pinned and pinned.group(1) == binaries.PROMTOOL_VERSION
    assert "tool github.com/prometheus/prometheus/cmd/promtool" in gomod
    assert (binaries.GOMOD_DIR / "promtool" / "go.sum").stat().st_size > 0


@pytest.mark.parametrize(
    ("module", "release"),
    [("v0.300.0", "3.0.0"), ("v0.300.1", "3.0.1"), ("v0.313.5", "3.13.5"), ("v0.316.0", "3.16.0")],
)
def test_prometheus_releases_of_module_versions(module: str, release: str) -> None:
    assert binaries.prometheus_release(module) == release


def test_a_module_version_that_is_no_release_is_refused() -> None:
    with pytest.raises(KubehoistError):
        binaries.prometheus_release("v2.55.0")


@pytest.mark.parametrize("version", ["v1.35.4", "v1.36.3"])
def test_each_supported_kubernetes_version_has_its_consumer_module(version: str) -> None:
    module = binaries.kube_module_dir(version)
    assert module.name == f"kubernetes-{version}"
    gomod = (module / "go.mod").read_text()
    assert re.search(rf"^(require )?\s*k8s\.io/kubernetes {re.escape(version)}\b", gomod, re.M)
    staging = f"v0.{version.split('.', 1)[1]}"  # v1.35.4 -> v0.35.4
    replaced = re.findall(r"^\t(k8s\.io/\S+) => \1 (v\S+)$", gomod, re.M)
    assert replaced, "no staging module replaced"
    assert {v for _, v in replaced} == {staging}
    # every module the build needs is checksummed (the build runs with -mod=readonly)
    gosum = (module / "go.sum").read_text()
    assert f"k8s.io/kubernetes {version} h1:" in gosum
    assert f"k8s.io/client-go {staging} h1:" in gosum


def test_the_cache_is_keyed_by_kubernetes_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBEHOIST_BIN_DIR", raising=False)
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path))
    old, new = binaries.locate("v1.35.4"), binaries.locate("v1.36.3")
    assert old.path("kubelet") == tmp_path / "bin/kubernetes-v1.35.4/kubelet"
    assert new.path("kubelet") == tmp_path / "bin/kubernetes-v1.36.3/kubelet"
    assert old.path("etcd") == new.path("etcd")  # one etcd for both


def test_an_unsupported_kubernetes_version_is_one_line_naming_the_supported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBEHOIST_BIN_DIR", raising=False)
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path))
    with pytest.raises(KubehoistError) as err:
        binaries.ensure("v1.34.0", progress=False)
    assert str(err.value) == (
        "Kubernetes v1.34.0: not a version the lab builds (supported: v1.35.4, v1.36.3)"
    )
    assert not (tmp_path / "bin").exists()  # nothing built, nothing created


def test_lab_build_of_an_unsupported_version_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from kubehoist.cli import cli

    monkeypatch.delenv("KUBEHOIST_BIN_DIR", raising=False)
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path))
    result = CliRunner().invoke(cli, ["lab", "build", "--kubernetes-version", "v1.37.0"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: Kubernetes v1.37.0: not a version the lab builds (supported: v1.35.4, v1.36.3)\n"
    )
    assert not (tmp_path / "bin").exists()


@pytest.mark.parametrize(("flags", "want_tools"), [([], False), (["--tools"], True)])
def test_lab_build_makes_the_tests_promtool_only_with_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], want_tools: bool
) -> None:
    """The lab's binaries (and a demo) need no promtool; scripts/test builds it with
    --tools beside the first tests."""
    from click.testing import CliRunner

    from kubehoist.cli import cli
    from kubehoist.lab import images

    ready = tmp_path / "ready"
    ready.mkdir()
    for name in (*binaries.ALL_BINARIES, *binaries.TOOL_BINARIES):
        (ready / name).write_bytes(b"\0" * 1024)
    monkeypatch.setenv("KUBEHOIST_BIN_DIR", str(ready))
    calls: list[str] = []
    monkeypatch.setattr(binaries, "ensure", lambda v: calls.append(v) or binaries.locate(v))
    monkeypatch.setattr(binaries, "ensure_tools", lambda: calls.append("tools"))
    monkeypatch.setattr(images, "lab_images", lambda bins, v: [])
    result = CliRunner().invoke(cli, ["lab", "build", "--kubernetes-version", "v1.35.4", *flags])
    assert result.exit_code == 0, result.output
    assert calls == ["v1.35.4", *(["tools"] if want_tools else [])]
    assert ("promtool " in result.stdout) == want_tools
    assert "kube-apiserver" in result.stdout
