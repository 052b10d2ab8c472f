"""Every command the README and docs/ show still parses: each `python -m explorer...` and
`inception-explorer ...` line goes through its command's own parser (the search's through its
settings check too), each `make` target exists, each `python -m bench NAME` names a bench of its
table. A renamed flag or a dropped subcommand fails here, not in a user's terminal."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("python -m explorer", "inception-explorer ", "make ", "python -m bench ", "bash bench/")


def commands(text: str) -> list[str]:
    """Command lines in fenced blocks and in inline code, with comments and prompts dropped."""
    found = []
    for block in re.findall(r"```(?:bash|text)?\n(.*?)```", text, re.S):
        for line in block.splitlines():
            found.append(line.split(" #", 1)[0].strip())
    found += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    out = []
    for line in found:
        line = line.strip()
        if line.startswith(STARTS) and "..." not in line and "[" not in line:
            out.append(line)
    return out


def _cases() -> list[tuple[str, str]]:
    return [
        (page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands(page.read_text())
    ]


def _explorer_parser(sub: str):
    import importlib

    if sub == "search":
        from explorer.search import cli

        return lambda args: cli.parse_settings(args)
    module = importlib.import_module(f"explorer.{sub}")
    return lambda args: module.build_parser().parse_args(args)


@pytest.mark.parametrize("page, line", _cases())
def test_a_documented_command_still_parses(page, line, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a --config path or output file is not touched: only parsed
    words = shlex.split(line)
    if words[0] == "make":
        targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"{page}: make {words[1]} is not a Makefile target"
        extra = [w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")]
        if not extra or words[1] not in ("search", "app"):
            return
        sub = "search" if words[1] == "search" else "dashboard"
        words = ["inception-explorer", sub, *shlex.split(extra[0])]
    if words[0] == "bash" and words[1].startswith("bench/"):
        assert (ROOT / words[1]).is_file(), f"{page}: {words[1]} does not exist"
        return
    if words[:3] == ["python", "-m", "bench"]:
        from bench.__main__ import BENCHES

        assert words[3] in (*BENCHES, "--help"), f"{page}: `{line}` names no bench of its table"
        return
    if words[:2] == ["python", "-m"]:
        module, args = words[2], words[3:]
        sub = module.split(".", 1)[1] if "." in module else (args.pop(0) if args else "")
    else:
        sub, args = (words[1], words[2:]) if len(words) > 1 else ("", [])
    if sub in ("info", "dashboard", ""):
        from explorer import cli

        cli.build_parser().parse_args([sub, *args] if sub else args)
        return
    if not args and sub not in ("search",):  # a mention of the command, not a call: it exists
        import importlib

        importlib.import_module(f"explorer.{sub}")
        return
    if "--config" in args:
        config = args[args.index("--config") + 1]
        monkeypatch.chdir(ROOT)
        assert Path(config).is_file(), f"{page}: {config} does not exist"
    from explorer.usage import UsageError

    try:
        _explorer_parser(sub)(args)
    except SystemExit as exc:  # --help exits 0; a bad flag exits 2
        assert exc.code == 0, f"{page}: `{line}` does not parse"
    except UsageError as exc:
        pytest.fail(f"{page}: `{line}` does not parse: {exc}")


def test_the_pages_show_commands():
    """The extraction finds the README's two commands and the tour's, so the test above tests."""
    readme = commands((ROOT / "README.md").read_text())
    assert "make search" in readme and "make test" in readme
    assert any(c.startswith("python -m explorer.export") for c in readme)
    assert len(_cases()) >= 20


def test_the_readme_first_screen_is_a_product_page():
    """What the tool is, the two set-up commands, the installed form, a picture and a table of
    results the verdict rule decided (each with its interval), all in the first 40 lines."""
    head = (ROOT / "README.md").read_text().splitlines()[:40]
    text = "\n".join(head)
    for needed in ("make search", "make test", "inception-explorer search", "![", "quickx10"):
        assert needed in text, needed
    rows = [line for line in head if line.startswith("| `")]
    assert rows, "no results table on the first screen"
    interval = re.compile(
        r"[+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\] (better|worse|not distinguishable)"
    )
    for row in rows:
        assert len(interval.findall(row)) == 2, row
