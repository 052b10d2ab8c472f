"""The installed distribution holds every package of the source tree (pyproject lists them by
hand, because app/ installs as explorer.dashboard)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def test_every_package_folder_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {v: k for k, v in config.get("package-dir", {}).items()}
    found = set()
    for top in ("explorer", "search_space", "app"):
        for init in (ROOT / top).rglob("__init__.py"):
            folder = init.parent.relative_to(ROOT).as_posix()
            name = mapped.get(folder, folder.replace("/", "."))
            found.add(name)
    assert found == listed, (
        f"pyproject lacks {sorted(found - listed)} or lists {sorted(listed - found)}"
    )
