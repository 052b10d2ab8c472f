"""The bench/ scripts stay runnable against today's API: each command answers ``--help``, imports
from explorer only what a package exports, and keeps its functions short enough to read.

A bench script is a command when it has an ``if __name__ == "__main__":`` block; the others
(bench/report.py) are libraries the commands import.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))
SURFACES = {f"explorer.{name}" for name in ("store", "training", "analysis", "search", "evaluate",
                                            "export", "ablate", "usage", "cli")}  # fmt: skip
MAX_FUNCTION_LINES = 120


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_command(path: Path) -> bool:
    for node in _tree(path).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ):
            return True
    return False


COMMANDS = [p for p in SCRIPTS if _is_command(p)]


def _name(path: Path) -> str:
    return path.name


def test_the_commands_are_found():
    assert len(COMMANDS) >= 9, [p.name for p in COMMANDS]
    assert BENCH / "report.py" in SCRIPTS and BENCH / "report.py" not in COMMANDS


@pytest.mark.parametrize("script", COMMANDS, ids=_name)
def test_each_command_answers_help(script):
    proc = subprocess.run(
        [sys.executable, f"bench/{script.name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"usage: {script.name}"), proc.stdout[:500]


def _explorer_imports(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of explorer, at any depth; code held in a string to
    run in a child process (bench/chaos.py's worker) counts too."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "explorer":
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("explorer")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "import" in node.value and "explorer" in node.value:
                try:
                    inner = ast.parse(node.value)
                except SyntaxError:
                    continue
                out += [(node.lineno, m, n) for _, m, n in _explorer_imports(inner)]
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_bench_imports_only_what_packages_export(script):
    wrong = []
    for line, module, names in _explorer_imports(_tree(script)):
        where = f"{script.name}:{line}"
        if module not in SURFACES:
            wrong.append(f"{where}: {module} is not a package (one of {sorted(SURFACES)})")
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        for name in names:
            if name.startswith("_") or (public is not None and name not in public):
                wrong.append(f"{where}: {module}.{name} is not in its __all__")
    assert not wrong


def test_the_import_check_catches_a_submodule_and_a_private_name():
    tree = ast.parse(
        "from explorer.training.trainer import _setup\n"
        "def f():\n"
        "    from explorer.search import run_worker, _claim\n"
        "WORKER = '''\nfrom explorer.search.workers import run_worker\n'''\n"
    )
    found = {module: names for _, module, names in _explorer_imports(tree)}
    assert found == {
        "explorer.training.trainer": ["_setup"],
        "explorer.search": ["run_worker", "_claim"],
        "explorer.search.workers": ["run_worker"],
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_no_bench_function_is_too_long_to_read(script):
    long = [
        f"{script.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(_tree(script))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long
