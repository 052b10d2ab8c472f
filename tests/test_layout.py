"""The code's layout holds: import-linter's layers contract passes and fails on an upward import,
modules stay readable in size, imports sit at module top unless a comment says why, and the
dashboard imports only what the packages export."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("store", "training", "analysis", "search", "evaluate", "export", "ablate")
MAX_MODULE_LINES = 600

needs_lint_imports = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')"
)


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


@needs_lint_imports
def test_the_layers_contract_is_kept():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@needs_lint_imports
def test_an_upward_import_breaks_the_contract(tmp_path):
    for name in ("explorer", "search_space", "app", "bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    urls = tmp_path / "explorer" / "store" / "urls.py"
    urls.write_text(urls.read_text() + "\nfrom explorer.search import cli  # noqa: E402,F401\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "explorer's layers BROKEN" in proc.stdout
    assert "explorer.store.urls -> explorer.search.cli" in proc.stdout


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules("explorer"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long_to_read(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


@pytest.mark.parametrize(
    "path", _modules("explorer") + _modules("search_space"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_an_import_inside_a_function_says_why(path):
    """Imports belong at module top; one inside a function carries a comment (on its line or the
    line above) giving the reason: an optional extra, a slow import measured, ..."""
    lines = path.read_text().splitlines()
    bare = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                here = lines[sub.lineno - 1]
                above = lines[sub.lineno - 2].strip() if sub.lineno > 1 else ""
                if "#" not in here and not above.startswith("#"):
                    bare.append(f"{path.name}:{sub.lineno}: {here.strip()}")
    assert not bare


def _explorer_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("explorer"):
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("explorer")]
    return out


@pytest.mark.parametrize("path", _modules("app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_dashboard_imports_only_what_packages_export(path):
    allowed = {f"explorer.{p}" for p in PACKAGES} | {"explorer.usage", "explorer.cli"}
    wrong = []
    for line, module, names in _explorer_imports(path):
        if module not in allowed:
            wrong.append(f"{path.name}:{line}: {module} is not a package's surface")
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        if public is not None:
            wrong += [f"{path.name}:{line}: {module}.{n} is not exported" for n in names
                      if n not in public]  # fmt: skip
    assert not wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_says_what_it_holds_and_exports_what_it_names(package):
    module = importlib.import_module(f"explorer.{package}")
    assert module.__doc__ and len(module.__doc__.split()) > 15
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing
