"""List the functions longer than a limit, longest first (the def line through the last line).

    python scripts/long_functions.py                 # all the code, over 60 lines
    python scripts/long_functions.py clip_core --limit 40

Exits 1 when any function is over the limit, so it can guard a folder.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = [ROOT / name for name in ("clip_core", "tasks", "suite", "scripts", "train.py")]


def shown(file: Path) -> str:
    """``file`` relative to the repository when inside it."""
    try:
        return str(file.resolve().relative_to(ROOT))
    except ValueError:
        return str(file)


def long_functions(paths: list[Path], limit: int) -> list[tuple[int, str, str]]:
    """``(lines, file:line, name)`` of every function or method over ``limit`` lines."""
    files = [f for p in paths for f in ([p] if p.suffix == ".py" else sorted(p.rglob("*.py")))]
    found = []
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((lines, f"{shown(file)}:{node.lineno}", node.name))
    return sorted(found, key=lambda row: (-row[0], row[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (all the code)")
    parser.add_argument("--limit", type=int, default=60, help="longest allowed function (60)")
    args = parser.parse_args(argv)
    found = long_functions(args.paths or CODE, args.limit)
    for lines, where, name in found:
        print(f"{lines:5d}  {where}  {name}")
    print(f"{len(found)} function(s) over {args.limit} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
