"""Fail when a function in src/ is longer than the project's limit (docs: functions short).

ruff's rules count branches and statements; this counts lines, from the ``def`` line to the
function's last line (decorators, the docstring and blank lines inside it included).

    python .ci/function_length.py [--max 80] [paths...]      # default: src
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MAX = 80


def long_functions(path: Path, limit: int) -> Iterator[tuple[int, str, int]]:
    """``(line, name, length)`` of every function in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                yield node.lineno, node.name, length


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max", type=int, default=DEFAULT_MAX, help="most lines a function may have"
    )
    parser.add_argument("paths", nargs="*", default=["src"], help="files or folders (default: src)")
    args = parser.parse_args(argv)
    files = sorted(
        f for p in map(Path, args.paths) for f in ([p] if p.is_file() else p.rglob("*.py"))
    )
    found = [
        f"{path}:{line}: {name} is {length} lines long (at most {args.max})"
        for path in files
        for line, name, length in long_functions(path, args.max)
    ]
    for message in found:
        print(message)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
