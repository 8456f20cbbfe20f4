"""Every hook is documented in its docstring and in docs/plugins.md, and exercised by a test."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from modelmgr.run import hookspecs
ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec"))


def test_there_are_hooks() -> None:
    assert {"register_backends", "register_commands", "select_backend"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring(name: str) -> None:
    spec = getattr(hookspecs, name)
    assert inspect.getdoc(spec) and len(inspect.getdoc(spec)) > 40
    if getattr(spec, f"{hookspecs.PROJECT}_spec").get("firstresult"):
        assert "Stops at the first non-None result" in inspect.getdoc(spec)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_in_the_plugin_guide(name: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert re.search(rf"^#+ .*`{name}\(", guide, re.MULTILINE), f"docs/plugins.md has no heading for {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_implemented_by_a_test(name: str) -> None:
    test_files = [*(ROOT / "tests").rglob("test_*.py"), *(ROOT / "plugins").glob("*/tests/test_*.py")]
    implementing = [path for path in test_files if re.search(rf"^\s*def {name}\(", path.read_text(), re.MULTILINE)]
    assert implementing, f"no test implements the {name} hook"
