"""The lab for end-to-end tests: brought up once per test run, taken down at the end.

KUBEHOIST_TEST_LAB_ROOT and KUBEHOIST_TEST_HOST_PORT choose where (so a developer's
own lab is left alone); under pytest-xdist (`-n 2 --dist loadfile`, as scripts/test
runs them) the second worker's session lab is at `<root>-gw1`, port + 200. The tests
need root; without it they fail, never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig

from kubehoist.lab.binaries import locate
from kubehoist.lab.spec import LabSpec


def kubehoist(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "kubehoist", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubehoist {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


@dataclass
class LabHandle:
    spec: LabSpec
    kubeconfig: Path
    client: Client

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        kubectl = locate(self.spec.kubernetes_version).path("kubectl")
        cmd = [str(kubectl), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def kubehoist(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubehoist(*args, "--root", str(self.spec.root), check=check)


def node_files(spec: LabSpec) -> dict[str, bytes]:
    """Every file under each control plane's /etc/kubernetes/{manifests,kubehoist}."""
    out = {}
    for node in spec.control_planes:
        etc = node.root(spec.root) / "etc/kubernetes"
        for sub in ("manifests", "kubehoist"):
            for p in sorted((etc / sub).rglob("*")) if (etc / sub).exists() else []:
                if p.is_file():
                    out[str(p.relative_to(spec.root))] = p.read_bytes()
    return out


def _worker() -> int:
    """Which pytest-xdist worker this is (gw0 -> 0; 0 without xdist): with `-n 2` each
    worker has a session lab of its own, at its own root and port."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def lab_root() -> Path:
    if env := os.environ.get("KUBEHOIST_TEST_LAB_ROOT"):
        root = Path(env)
    else:
        root = Path("/tmp/kubehoist-e2e/lab")
    return root.with_name(f"{root.name}-gw{_worker()}") if _worker() else root


def host_port() -> int:
    return int(os.environ.get("KUBEHOIST_TEST_HOST_PORT", "16543")) + 200 * _worker()


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces); run them as root")


def start_lab(
    root: Path,
    port: int,
    *,
    workers: int,
    control_planes: int = 1,
    kubernetes_version: str | None = None,
) -> LabHandle:
    _require_root()
    kubehoist("lab", "down", "--purge", "--root", str(root), check=False)
    version = ("--kubernetes-version", kubernetes_version) if kubernetes_version else ()
    try:
        kubehoist(
            "lab", "up", "--root", str(root), "--host-port", str(port),
            "--workers", str(workers), "--control-planes", str(control_planes), *version,
        )  # fmt: skip
    except BaseException:
        # A lab that did not come up is not left running beside the next tests.
        if not os.environ.get("KUBEHOIST_TEST_KEEP_LAB"):
            kubehoist("lab", "down", "--purge", "--root", str(root), check=False)
        raise
    spec = LabSpec.load(root.resolve())
    client = Client(KubeConfig.from_file(str(spec.admin_kubeconfig)), trust_env=False)
    return LabHandle(spec=spec, kubeconfig=spec.admin_kubeconfig, client=client)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    handle = start_lab(lab_root(), host_port(), workers=2)
    try:
        yield handle
    finally:
        kubehoist("lab", "down", "--purge", "--root", str(handle.spec.root), check=False)
