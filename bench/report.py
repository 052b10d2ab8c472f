"""Writing a benchmark's results into its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {title}\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + head + body.rstrip() + "\n" + (text[nxt:] if nxt != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + head + body.rstrip() + "\n"
    path.write_text(text)
