"""The house in layers, checked from the source: every import of every module (lazy ones inside
functions included, ``TYPE_CHECKING`` ones aside) goes down a layer or stays in its own, and no
two modules import each other round a cycle.

Layers, lowest first (docs/architecture.md says what each holds):
  base      errors, units, fsutil, _version
  project   what the user asked for
  cache     huggingface_hub's layout on disk
  fetch     the network
  run       running models
  serve     the server over run/
  commands  one module per command
  cli       the click group (and ``__main__``)
The facade (``modelmgr/__init__.py``) names everything lazily by string, and ``modelmgr.testing``
sits above all of them; nothing in the layers imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelmgr"
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
LAYERS = ["base", "project", "cache", "fetch", "run", "serve", "commands", "cli", "testing"]
BASE_MODULES = {"modelmgr.errors", "modelmgr.units", "modelmgr.fsutil", "modelmgr._version"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a modelmgr module; None for the facade, which belongs to none."""
    if module == "modelmgr":
        return None
    if module in BASE_MODULES:
        return "base"
    if module in ("modelmgr.cli", "modelmgr.__main__"):
        return "cli"
    sub = module.split(".")[1]
    if sub in LAYERS:
        return sub
    raise AssertionError(f"{module} is in no layer: put it in a layer package or add it to the base modules")


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import outside ``if TYPE_CHECKING:``, relative ones resolved.
    ``from X import name`` counts as X.name when that is a module of the package, else as X."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    candidate = f"{target}.{alias.name}"
                    found.append((candidate if candidate in ALL_MODULES else target, child.lineno))
            visit(child)

    visit(tree)
    return [(name, line) for name, line in found if name == "modelmgr" or name.startswith("modelmgr.")]


SOURCES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
ALL_MODULES = set(SOURCES)
GRAPH = {module: imports_of(path, module) for module, path in SOURCES.items()}


def _is_command_helper(module: str) -> bool:
    """commands/_common.py, _progress.py and the like: shared by commands, none of them a command."""
    return module == "modelmgr.commands" or module.rpartition(".")[2].startswith("_")


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    problems = []
    for module, imported in graph.items():
        here = layer_of(module)
        if here is None:
            continue
        for target, line in imported:
            if target == "modelmgr":
                if here != "testing":
                    problems.append(f"{module}:{line} imports the facade; import the module that defines the name")
                continue
            if target not in ALL_MODULES:
                problems.append(f"{module}:{line} imports {target}, which does not exist")
                continue
            there = layer_of(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                problems.append(f"{module}:{line} ({here}) imports {target} ({there}), a higher layer")
            if here == there == "commands" and not _is_command_helper(target) and not _is_command_helper(module):
                problems.append(f"{module}:{line} imports the command module {target}; share helpers through _common")
    return problems


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each a cycle to break."""
    edges = {m: sorted({t for t, _ in imported if t in graph and t != m}) for m, imported in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_every_module_belongs_to_a_layer():
    for module in ALL_MODULES:
        layer_of(module)


def test_no_import_runs_up_a_layer():
    assert upward_imports(GRAPH) == []


def test_no_import_cycles():
    assert cycles({m: imported for m, imported in GRAPH.items() if m != "modelmgr"}) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The checks themselves can fail: a cache module importing fetch is caught, and so is a loop."""
    graph = dict(GRAPH)
    graph["modelmgr.cache.layout"] = [*graph["modelmgr.cache.layout"], ("modelmgr.fetch.pull", 1)]
    assert any("modelmgr.cache.layout:1 (cache) imports modelmgr.fetch.pull (fetch)" in p for p in upward_imports(graph))
    assert any({"modelmgr.cache.layout", "modelmgr.fetch.pull"} <= set(group) for group in cycles(graph))


def test_sub_package_init_files_are_empty():
    """So importing modelmgr.cache.layout costs only what it imports (``list`` and ``rm`` stay lean)."""
    for layer in ("project", "cache", "fetch", "run", "serve", "commands"):
        init = PACKAGE / layer / "__init__.py"
        if init.exists():
            body = [node for node in ast.parse(init.read_text()).body
                    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
            assert body == [], f"{init} holds code"


@pytest.mark.parametrize("plugin", sorted(p.name for p in PLUGINS.iterdir() if p.is_dir()))
def test_plugins_import_only_the_facade(plugin):
    """A third party has one API to import; the built-in plugins prove it is enough."""
    for path in sorted((PLUGINS / plugin).rglob("*.py")):
        if "tests" in path.relative_to(PLUGINS / plugin).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert not name.startswith("modelmgr."), f"{path}:{node.lineno} imports {name}; use `from modelmgr import ...`"


def test_core_modules_stay_small():
    """A module over 450 lines holds more than one job (the local Hub server aside)."""
    exempt = {"modelmgr.testing.server"}
    long = {m: len(p.read_text().splitlines()) for m, p in SOURCES.items() if m not in exempt}
    assert {m: n for m, n in long.items() if n > 450} == {}


# Libraries that cost seconds to import or belong to one command: never at a module's top level
# in the core, so `--help`, `list`, `rm` and `pull` start at once (the server imports its stack
# when it starts). modelmgr.testing is for tests and plugin authors.
HEAVY = {"torch", "transformers", "bitsandbytes", "llama_cpp", "gguf", "numpy", "fastapi", "starlette",
         "uvicorn", "openai", "httpx", "huggingface_hub", "safetensors"}


def _module_level(node: ast.AST):
    """Statements that run at import: the top level and the ``if``/``try``/``with`` blocks in it,
    not function or class bodies (importing inside a function is the point), not TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) or _type_checking_block(child):
            continue
        yield child
        yield from _module_level(child)


def test_nothing_heavy_is_imported_at_module_level():
    wrong = []
    for module, path in SOURCES.items():
        if layer_of(module) == "testing":
            continue
        for node in _module_level(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{module}:{node.lineno} imports {name}" for name in names if name.split(".")[0] in HEAVY]
    assert wrong == []
