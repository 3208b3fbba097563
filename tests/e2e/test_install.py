"""The wheel in a user's toolbox: built by the standard front-end, installed with
`uv tool install` into an isolated environment, and run by kubectl as a plugin.

`kubectl hoist status` — kubectl (the lab's own binary) finding `kubectl-hoist` on PATH
— must say what `kubehoist status` says about the same lab, and name itself
`kubectl hoist`; kubectl's completion reaches the plugin through
`kubectl_complete-hoist`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubehoist import __version__
from kubehoist.lab.binaries import locate
from kubehoist.lab.spec import KUBERNETES_VERSION
from tests.e2e.conftest import LabHandle, kubehoist

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("kubehoist", "kubectl-hoist", "kubectl_complete-hoist")


def run(
    cmd: list[str], *, env: dict[str, str], ok: tuple[int, ...] = (0,), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode in ok, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory `uv tool install` filled from a freshly built wheel."""
    base = tmp_path_factory.mktemp("toolbox")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(base / "dist"), str(ROOT)],
        env=env,
    )
    [wheel] = (base / "dist").glob("kubehoist-*.whl")
    env |= {
        "UV_TOOL_DIR": str(base / "tools"),
        "UV_TOOL_BIN_DIR": str(base / "bin"),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    run(
        [sys.executable, "-m", "uv", "tool", "install", "--python", sys.executable, str(wheel)],
        env=env,
    )
    # isolated: its own interpreter environment, with the wheel's code, not this checkout
    tool_python = base / "tools" / "kubehoist" / "bin" / "python"
    where = run([str(tool_python), "-c", "import kubehoist; print(kubehoist.__file__)"], env=env)
    assert where.stdout.startswith(str(base / "tools")), where.stdout
    return base / "bin"


def plugin_env(bin_dir: Path) -> dict[str, str]:
    """PATH with the installed scripts and the system's tools only."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def essentials(doc: dict[str, Any]) -> list[Any]:
    """What a status says that does not change from one second to the next."""
    return [
        (
            c["component"],
            c["verdict"],
            c["leader"] and c["leader"]["pod"],
            sorted((p["pod"], p["role"]) for p in c["candidates"]),
        )
        for c in doc["components"]
    ]


def test_the_wheel_installs_and_kubectl_runs_it_as_hoist(installed: Path, lab: LabHandle) -> None:
    for script in SCRIPTS:
        assert os.access(installed / script, os.X_OK), script
    env = plugin_env(installed)
    version = run([str(installed / "kubehoist"), "--version"], env=env).stdout
    assert version == f"kubehoist {__version__} (tested with Kubernetes {KUBERNETES_VERSION})\n"

    kubectl = str(locate().path("kubectl"))
    plugins = run([kubectl, "plugin", "list", "--name-only"], env=env).stdout
    assert "kubectl-hoist" in plugins.split()

    config = ["--kubeconfig", str(lab.kubeconfig)]  # after the plugin name: kubectl wants so
    ours = kubehoist("status", *config, "-o", "json", check=False)
    theirs = run([kubectl, "hoist", "status", *config, "-o", "json"], env=env, ok=(0, 3))
    assert theirs.returncode == ours.returncode, theirs.stderr
    assert essentials(json.loads(theirs.stdout)) == essentials(json.loads(ours.stdout))

    ours_text = kubehoist("status", *config, check=False).stdout.splitlines()
    theirs_text = run([kubectl, "hoist", "status", *config], env=env, ok=(0, 3)).stdout
    assert theirs_text.splitlines()[0].split() == ours_text[0].split()  # the same table

    wrong = run([kubectl, "hoist", "status", "--bogus"], env=env, ok=(2,))
    assert "Usage: kubectl hoist status" in wrong.stderr
    assert "kubehoist" not in wrong.stderr

    completed = run([kubectl, "__complete", "hoist", "sta"], env=env).stdout
    assert "status" in [line.split("\t")[0] for line in completed.splitlines()]
