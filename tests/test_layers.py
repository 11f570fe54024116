"""The layers of the code base, each importing only from those below it (function-level imports
included): leaves, then configs, then ``core`` and ``models`` (arrays and tensors, no lake),
then ``lake``, then ``steps``, then the CLI and the Prefect flows. An upward arrow is a
module that lies about its docstring's promise; this test names it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the lowest layer first; a module takes the rank of the longest prefix listed
LAYERS = [
    ("smartaug.errors", "smartaug.lazy", "smartaug.orphans", "smartaug.files", "smartaug.textfile",
     "smartaug.progress"),
    ("smartaug.config", "smartaug.pacing", "smartaug.policy"),
    ("smartaug.core", "smartaug.models"),
    ("smartaug.lake",),
    ("smartaug.steps", "smartaug.experiment_file"),
    ("smartaug.cli", "smartaug.flows"),
]


def rank(module: str) -> int | None:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "smartaug" else [
                f"smartaug.{a.name}" for a in node.names]
            yield from ((n, node.lineno) for n in names)
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in (ROOT / "smartaug").rglob("*.py")
               if rank(module_name(p)) is None and module_name(p) != "smartaug"]
    assert missing == []


def test_imports_only_point_down():
    upward = []
    for d in ("smartaug",):
        for path in sorted((ROOT / d).rglob("*.py")):
            me = module_name(path)
            mine = rank(me)
            if mine is None:
                continue
            for target, line in imports(path):
                theirs = rank(target)
                if theirs is not None and theirs > mine:
                    upward.append(f"{path.relative_to(ROOT)}:{line} {me} -> {target}")
    assert upward == [], "imports from a lower layer to a higher one:\n" + "\n".join(upward)
