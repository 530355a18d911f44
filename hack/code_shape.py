#!/usr/bin/env python3
"""Prints the shape of the source trees: the largest modules and the longest functions.

    hack/code_shape.py [ROOT] [--top N] [--limit LINES] [--check]

Figures for reviews and closing notes. A function's length counts its lines from `def` to its
last line, docstring and comments included. With --check it lists only the functions over the
limit and fails if there is one (hack/lint.sh: 60 lines, next to ruff's complexity limits).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

TREES = ("operator/src", "connector/src")
GENERATED = ("vllm_flags.py",)  # generated tables, not code anyone edits


def modules(root: Path) -> list[tuple[int, str]]:
    out = []
    for tree in TREES:
        for path in sorted((root / tree).rglob("*.py")):
            if path.name not in GENERATED:
                lines = len(path.read_text(encoding="utf-8").splitlines())
                out.append((lines, str(path.relative_to(root))))
    return sorted(out, reverse=True)


def functions(root: Path) -> list[tuple[int, str]]:
    out = []
    for _, rel in modules(root):
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                out.append((length, f"{rel}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--limit", type=int, default=60, help="count functions longer than this")
    parser.add_argument(
        "--check", action="store_true", help="only list functions over --limit; exit 1 if any"
    )
    args = parser.parse_args()
    mods, funcs = modules(args.root), functions(args.root)
    over = [f for f in funcs if f[0] > args.limit]
    if args.check:
        for n, name in over:
            print(f"{name}: {n} lines (limit {args.limit})")
        return 1 if over else 0
    print(f"largest modules ({len(mods)} in {', '.join(TREES)}):")
    for n, name in mods[: args.top]:
        print(f"  {n:5d}  {name}")
    print(f"longest functions ({len(funcs)}):")
    for n, name in funcs[: args.top]:
        print(f"  {n:5d}  {name}")
    print(f"functions longer than {args.limit} lines: {len(over)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
