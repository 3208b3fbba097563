"""The lab's Kubernetes and etcd binaries (and the tests' promtool): where they are,
and building them.

They are built from the Go module proxy with the consumer modules in `gomod/`
(k8s.io/kubernetes needs each staging module replaced by its v0.X.Y release; one
consumer module per supported Kubernetes version, `gomod/kubernetes-vX.Y.Z`) into a
cache outside the repository, keyed by version, so that a cold build happens once per
machine and version, and only for a version that is asked for. `KUBEHOIST_BIN_DIR`
points at ready binaries instead (for example the official release binaries): then
nothing is built, only the versions are checked.

The build runs under an exclusive file lock, into a temporary directory renamed into
place at the end, so two racing builds neither corrupt nor repeat each other's work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubehoist.cachedir import cache_root, locked
from kubehoist.errors import KubehoistError
from kubehoist.lab.spec import (
    CONTAINERD_VERSION,
    CRICTL_VERSION,
    ETCD_VERSION,
    KUBERNETES_VERSION,
    KUBERNETES_VERSIONS,
)

KUBE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubeadm",
    "kubectl",
    "kubelet",
)
CONTAINERD_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")
ALL_BINARIES = (*KUBE_BINARIES, "etcd", *CONTAINERD_BINARIES, "crictl")
"""What a lab runs; `KUBEHOIST_BIN_DIR` must hold all of them."""
TOOL_BINARIES = ("promtool",)
"""Not the lab's: what tests check the project's files with (`ensure_tools`)."""
PROMTOOL_VERSION = "v0.300.0"
"""github.com/prometheus/prometheus as a Go module: Prometheus 3.0.0 (v3.A.B is v0.3AA.B),
the oldest v3 release; it checks and unit-tests deploy/prometheus/ (gomod/promtool)."""
GOMOD_DIR = Path(__file__).parent / "gomod"
_STAMP = ".complete"


def check_supported(kubernetes_version: str) -> None:
    """KubehoistError unless the lab has a consumer module for this Kubernetes version."""
    if kubernetes_version not in KUBERNETES_VERSIONS:
        raise KubehoistError(
            f"Kubernetes {kubernetes_version}: not a version the lab builds "
            f"(supported: {', '.join(KUBERNETES_VERSIONS)})"
        )


def kube_module_dir(kubernetes_version: str) -> Path:
    """The consumer module that builds this Kubernetes version."""
    check_supported(kubernetes_version)
    return GOMOD_DIR / f"kubernetes-{kubernetes_version}"


@dataclass(frozen=True)
class Binaries:
    """Where each binary of one Kubernetes and one etcd version lives."""

    kube_dir: Path
    etcd_dir: Path
    containerd_dir: Path
    crictl_dir: Path
    promtool_dir: Path

    def path(self, name: str) -> Path:
        if name not in ALL_BINARIES and name not in TOOL_BINARIES:
            raise KeyError(name)
        if name == "promtool":
            return self.promtool_dir / name
        if name == "etcd":
            return self.etcd_dir / name
        if name in CONTAINERD_BINARIES:
            return self.containerd_dir / name
        if name == "crictl":
            return self.crictl_dir / name
        return self.kube_dir / name

    def missing(self) -> list[str]:
        return [n for n in ALL_BINARIES if not os.access(self.path(n), os.X_OK)]


def locate(
    kubernetes_version: str = KUBERNETES_VERSION, etcd_version: str = ETCD_VERSION
) -> Binaries:
    """The binaries' places; they may not exist yet (see `ensure`)."""
    root = cache_root() / "bin"
    if env := os.environ.get("KUBEHOIST_BIN_DIR"):
        d = Path(env)
        # promtool is no lab binary: taken from there if it is there, else the cache's
        tools = d if os.access(d / "promtool", os.X_OK) else root / f"promtool-{PROMTOOL_VERSION}"
        return Binaries(kube_dir=d, etcd_dir=d, containerd_dir=d, crictl_dir=d, promtool_dir=tools)
    return Binaries(
        kube_dir=root / f"kubernetes-{kubernetes_version}",
        etcd_dir=root / f"etcd-{etcd_version}",
        containerd_dir=root / f"containerd-{CONTAINERD_VERSION}",
        crictl_dir=root / f"cri-tools-{CRICTL_VERSION}",
        promtool_dir=root / f"promtool-{PROMTOOL_VERSION}",
    )


def ensure(
    kubernetes_version: str = KUBERNETES_VERSION,
    etcd_version: str = ETCD_VERSION,
    *,
    log: Iterator[None] | None = None,
    progress: bool = True,
) -> Binaries:
    """Return ready binaries of these versions, building what the cache lacks."""
    check_supported(kubernetes_version)
    bins = locate(kubernetes_version, etcd_version)
    if os.environ.get("KUBEHOIST_BIN_DIR"):
        if missing := bins.missing():
            raise KubehoistError(
                f"KUBEHOIST_BIN_DIR={bins.kube_dir}: missing or not executable: "
                + ", ".join(missing)
            )
    else:
        _build_into(
            bins.kube_dir,
            module_dir=kube_module_dir(kubernetes_version),
            packages=[f"k8s.io/kubernetes/cmd/{b}" for b in KUBE_BINARIES],
            ldflags=_kube_ldflags(kubernetes_version),
            what=f"Kubernetes {kubernetes_version}",
            progress=progress,
        )
        _build_into(
            bins.etcd_dir,
            module_dir=GOMOD_DIR / "etcd",
            packages=["go.etcd.io/etcd/server/v3"],
            ldflags=_etcd_ldflags(),
            what=f"etcd {etcd_version}",
            output_name="etcd",
            progress=progress,
        )
        _build_into(
            bins.containerd_dir,
            module_dir=GOMOD_DIR / "containerd",
            packages=[f"github.com/containerd/containerd/v2/cmd/{b}" for b in CONTAINERD_BINARIES],
            ldflags=_containerd_ldflags(),
            what=f"containerd {CONTAINERD_VERSION}",
            progress=progress,
        )
        _build_into(
            bins.crictl_dir,
            module_dir=GOMOD_DIR / "cri-tools",
            packages=["sigs.k8s.io/cri-tools/cmd/crictl"],
            ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version="
            + CRICTL_VERSION.removeprefix("v"),
            what=f"crictl {CRICTL_VERSION}",
            output_name="crictl",
            progress=progress,
        )
    check_versions(bins, kubernetes_version, etcd_version)
    return bins


def ensure_tools(*, progress: bool = True) -> Binaries:
    """Return a ready promtool (`KUBEHOIST_BIN_DIR`'s, else the cache's), building it
    when the cache lacks it (`lab build --tools` does)."""
    bins = locate()
    path = bins.path("promtool")
    if bins.promtool_dir == cache_root() / "bin" / f"promtool-{PROMTOOL_VERSION}":
        _build_into(
            bins.promtool_dir,
            module_dir=GOMOD_DIR / "promtool",
            packages=["github.com/prometheus/prometheus/cmd/promtool"],
            ldflags=_promtool_ldflags(PROMTOOL_VERSION),
            what=f"promtool {PROMTOOL_VERSION}",
            output_name="promtool",
            progress=progress,
        )
    want = prometheus_release(PROMTOOL_VERSION)
    text = _version_of(path, "--version")
    found = re.search(r"promtool, version (\S+)", text)
    if not found or found.group(1) != want:
        raise KubehoistError(
            f"{path}: version {found.group(1) if found else 'unknown'}, want {want}"
        )
    return bins


def prometheus_release(module_version: str) -> str:
    """The Prometheus release of a github.com/prometheus/prometheus module version:
    v0.300.0 is 3.0.0, v0.313.5 is 3.13.5."""
    m = re.fullmatch(r"v0\.(\d)(\d\d)\.(\d+)", module_version)
    if not m:
        raise KubehoistError(f"Prometheus module version {module_version!r} is not v0.XYY.Z")
    return f"{m.group(1)}.{int(m.group(2))}.{m.group(3)}"


def _promtool_ldflags(module_version: str) -> str:
    pkg = "github.com/prometheus/common/version"
    return f"-s -w -X {pkg}.Version={prometheus_release(module_version)} -X {pkg}.Branch=HEAD"


def _kube_ldflags(version: str) -> str:
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise KubehoistError(f"Kubernetes version {version!r} is not of the form vX.Y.Z")
    major, minor = m.group(1), m.group(2)
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _etcd_ldflags() -> str:
    return "-s -w"


def _containerd_ldflags() -> str:
    pkg = "github.com/containerd/containerd/v2/version"
    return (
        f"-s -w -X {pkg}.Version={CONTAINERD_VERSION} "
        f"-X {pkg}.Package=github.com/containerd/containerd/v2"
    )


def _build_into(
    dest: Path,
    *,
    module_dir: Path,
    packages: list[str],
    ldflags: str,
    what: str,
    output_name: str | None = None,
    progress: bool,
) -> None:
    if (dest / _STAMP).exists():
        return
    go = shutil.which("go")
    if go is None:
        raise KubehoistError(
            f"cannot build {what}: no `go` on PATH (install Go >= 1.26, "
            "or set KUBEHOIST_BIN_DIR to a directory of ready binaries)"
        )
    with locked(dest.parent / f".{dest.name}.lock"):
        if (dest / _STAMP).exists():  # another build finished while we waited
            return
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
        # One package may be named (etcd's main package is `.../server/v3`); several go
        # into the directory under their own names.
        out = str(tmp / output_name) if output_name else f"{tmp}/"
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", out, *packages]
        if progress:
            print(f"building {what} into {dest} (a cold build takes a while)", file=sys.stderr)
        start = time.monotonic()
        log_path = dest.parent / f"{dest.name}.build.log"
        with open(log_path, "w") as log_fh:
            proc = subprocess.run(
                cmd, cwd=module_dir, env=env, stdout=log_fh, stderr=subprocess.STDOUT
            )
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            shutil.rmtree(tmp, ignore_errors=True)
            raise KubehoistError(
                f"building {what} failed (go build exit {proc.returncode}): {tail[0]} "
                f"(full log: {log_path})"
            )
        (tmp / _STAMP).write_text(f"built in {time.monotonic() - start:.0f}s\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        if progress:
            print(f"built {what} in {time.monotonic() - start:.0f}s", file=sys.stderr)


def _version_of(path: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise KubehoistError(f"{path}: cannot run: {exc.strerror}") from exc
    return out.stdout + out.stderr


def check_versions(bins: Binaries, kubernetes_version: str, etcd_version: str) -> None:
    """Every binary must report the pinned version (a wrong one is a clear error)."""
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        text = _version_of(bins.path(name), "--version")
        found = re.search(r"Kubernetes (v\S+)", text)
        if not found or found.group(1) != kubernetes_version:
            raise KubehoistError(
                f"{bins.path(name)}: version {found.group(1) if found else 'unknown'}, "
                f"want {kubernetes_version}"
            )
    text = _version_of(bins.path("kubeadm"), "version", "-o", "short")
    if text.strip() != kubernetes_version:
        raise KubehoistError(
            f"{bins.path('kubeadm')}: version {text.strip() or 'unknown'}, "
            f"want {kubernetes_version}"
        )
    text = _version_of(bins.path("etcd"), "--version")
    found = re.search(r"etcd Version: (\S+)", text)
    if not found or f"v{found.group(1)}" != etcd_version:
        raise KubehoistError(
            f"{bins.path('etcd')}: version {found.group(1) if found else 'unknown'}, "
            f"want {etcd_version}"
        )
