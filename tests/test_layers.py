"""The layers import only downwards (project < cache < fetch < run < serve < commands), lazy
imports included; only what is under ``if TYPE_CHECKING:`` is exempt. And nothing heavy is
imported at module level outside the server's own modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelmgr"
LAYERS = ["project", "cache", "fetch", "run", "serve", "commands"]
HEAVY = {"torch", "transformers", "fastapi", "starlette", "uvicorn", "openai", "httpx"}
# Imported only by `modelmgr serve` (commands/serve.py imports them inside the command).
SERVER_ONLY = {"serve/app.py"}


def _imports(tree: ast.AST, *, top_level_only: bool = False):
    """(module name, line) of every import, skipping `if TYPE_CHECKING:` blocks."""
    def walk(node: ast.AST, depth: int):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, depth
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.module, child.lineno, depth
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            yield from walk(child, depth + (1 if nested else 0))

    for name, line, depth in walk(tree, 0):
        if not top_level_only or depth == 0:
            yield name, line


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    wrong = []
    for name, tree in _sources():
        if not name.startswith(layer + "/"):
            continue
        for module, line in _imports(tree):
            parts = module.split(".")
            if parts[0] == "modelmgr" and len(parts) > 1 and parts[1] in LAYERS and parts[1] not in allowed:
                wrong.append(f"{name}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_nothing_heavy_at_module_level() -> None:
    wrong = []
    for name, tree in _sources():
        if name in SERVER_ONLY or name.startswith("testing/"):
            continue
        for module, line in _imports(tree, top_level_only=True):
            if module.split(".")[0] in HEAVY:
                wrong.append(f"{name}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
