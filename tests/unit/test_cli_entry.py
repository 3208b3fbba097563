"""The entry points: `kubehoist`, `kubectl-hoist` (`kubectl hoist …`) and completion."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubehoist import __version__
from kubehoist.cli import complete as kcomplete
from kubehoist.cli import kubectl_main, main
from kubehoist.lab.spec import KUBERNETES_VERSION

ROOT = Path(__file__).resolve().parents[2]


def run(entry: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        entry(argv)  # type: ignore[operator]
    out = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), out.out + out.err


def test_the_scripts_are_declared_for_each_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {
        "kubehoist": "kubehoist.cli:main",
        "kubectl-hoist": "kubehoist.cli:kubectl_main",
        "kubectl_complete-hoist": "kubehoist.cli.complete:main",
    }
    for dep in project["dependencies"]:
        assert "<" in dep, f"{dep}: no upper bound"


def test_kubectl_hoist_names_itself_in_usage_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(kubectl_main, ["status", "--bogus"], capsys)
    assert code == 2
    assert "Usage: kubectl hoist status [OPTIONS] [COMPONENT]..." in text
    assert "Try 'kubectl hoist status -h' for help." in text or "'kubectl hoist status" in text
    assert "kubehoist" not in text
    code, text = run(kubectl_main, ["-h"], capsys)
    assert code == 0
    assert text.startswith("Usage: kubectl hoist [OPTIONS] COMMAND [ARGS]...")


def test_kubehoist_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(main, ["status", "--bogus"], capsys)
    assert code == 2
    assert "Usage: kubehoist status" in text
    assert "kubectl" not in text


def test_messages_naming_a_verb_use_the_program_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(kubectl_main, ["lab", "status", "--root", str(tmp_path)], capsys)
    assert code == 1
    assert f"run `kubectl hoist lab up --root {tmp_path}`" in text
    code, text = run(main, ["lab", "status", "--root", str(tmp_path)], capsys)
    assert f"run `kubehoist lab up --root {tmp_path}`" in text


@pytest.mark.parametrize(("entry", "name"), [(main, "kubehoist"), (kubectl_main, "kubectl hoist")])
def test_version_names_the_kubernetes_it_was_tested_with(
    entry: object, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(entry, ["--version"], capsys)
    assert code == 0
    assert text.strip() == f"{name} {__version__} (tested with Kubernetes {KUBERNETES_VERSION})"


def complete(shell: str, words: str, cword: int) -> list[str]:
    """What click's completion answers the shell, run the way the shell runs it."""
    env = {
        **os.environ,
        "_KUBEHOIST_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kubehoist"], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.splitlines()


def test_bash_completes_a_verb_and_a_flag() -> None:
    assert complete("bash", "kubehoist sta", 1) == ["plain,status"]
    assert complete("bash", "kubehoist watch --out", 2) == ["plain,--output"]
    assert "plain,jsonl" in complete("bash", "kubehoist watch --output ", 3)


def test_zsh_completes_a_verb_and_a_flag() -> None:
    verbs = complete("zsh", "kubehoist ro", 1)
    assert verbs[:2] == ["plain", "rollback"]
    flags = complete("zsh", "kubehoist status --kubec", 2)
    assert flags[:2] == ["plain", "--kubeconfig"]


@pytest.mark.parametrize(
    ("shell", "line"),
    [
        ("bash", "complete -o nosort -F _kubehoist_completion kubehoist"),
        ("zsh", "compdef _kubehoist_completion kubehoist"),
    ],
)
def test_the_sourced_script_wires_the_function(shell: str, line: str) -> None:
    env = {**os.environ, "_KUBEHOIST_COMPLETE": f"{shell}_source", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "kubehoist"], env=env, capture_output=True, text=True, check=True
    )
    assert line in proc.stdout


def test_kubectl_plugin_completion_speaks_cobra(capsys: pytest.CaptureFixture[str]) -> None:
    kcomplete.main(["sta"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == ":4"
    assert [line.split("\t")[0] for line in lines[:-1]] == ["status"]
    kcomplete.main(["watch", "--out"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[0] == "--output"
    kcomplete.main(["render", "-f", ""])
    assert capsys.readouterr().out.splitlines()[-1] == ":0"  # a file name: the shell's own


def test_every_third_party_import_is_declared() -> None:
    """What src imports, outside the standard library, is a declared dependency."""
    import ast
    import re
    import sys

    distribution = {"yaml": "pyyaml", "prometheus_client": "prometheus-client"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    imported: set[str] = set()
    for path in (ROOT / "src" / "kubehoist").rglob("*.py"):
        tree = ast.parse(path.read_text())
        optional = {  # `try: import x / except ImportError:` has a way without x
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            and any(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
            )
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "kubehoist"}
    missing = sorted(m for m in third_party if distribution.get(m, m).lower() not in declared)
    assert missing == [], missing
    assert {"lightkube", "httpx2", "msgspec", "click", "cryptography"} <= third_party
