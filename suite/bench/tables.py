"""Writing a benchmark's Markdown table: printed, and written where the docs include it."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, out: Path) -> None:
    """Print a benchmark's Markdown ``text`` and write it to ``out``."""
    print(text, end="")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
