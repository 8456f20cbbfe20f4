"""The command line as a whole: what --help offers and what it costs to start."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import cli

HEAVY = ("torch", "transformers", "bitsandbytes", "huggingface_hub", "safetensors", "starlette", "uvicorn", "fastapi", "openai", "httpx")


def test_help_lists_every_verb(capsys):
    outcome = cli(capsys, "--help")
    assert outcome.code == 0
    commands = outcome.out.split("Commands:", 1)[1]
    for verb in ("pull", "list", "rm", "run", "show", "backends", "du", "prune", "verify", "config", "lock", "sync", "serve", "ps", "stop"):
        assert f"\n  {verb} " in commands, verb


def imported_after(*args: str) -> list[str]:
    code = (
        "import sys\n"
        "from modelmgr.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return completed.stdout.strip().splitlines()[-1]


def test_the_core_commands_import_no_heavy_library():
    for args in (["--help"], ["list"], ["list", "--json"], ["rm", "org/name", "--dry-run"], ["du"], ["config", "show"],
                 ["pull", "--help"], ["serve", "--help"], ["ps"], ["stop", "org/name"]):
        assert imported_after(*args) == "[]", args


def test_ps_and_stop_without_a_server_say_so_in_one_line(capsys):
    for args in (["ps"], ["stop", "org/name"]):
        outcome = cli(capsys, *args)
        assert outcome.code == 1 and outcome.err.count("\n") == 1, outcome.err
        assert outcome.err.startswith("Error: no server answers at http://127.0.0.1:1") and "modelmgr serve" in outcome.err


class _Int(int):
    pass


class _Str(str):
    pass


@pytest.mark.parametrize("data", [
    [{"id": "org/m", "size": 12, "ok": True, "gone": False, "used": None, "refs": ["main", "v1"], "missing": [],
      "quoted": 'a "b" \\ c\n\u00e9 %s %', "%key": 10**30, "neg": -5}],
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 3}],  # several shapes of record
    [{"a": 1.5}], [{"a": {"x": 1}}], [{"a": [1, 2]}], [{"a": [None]}], [{"a": ("t",)}], [{"a": float("nan")}],
    [{"a": _Int(3)}], [{"a": _Str("s")}], [{1: 2}], [{}], [{"a": 1}, {}], [], {"a": 1}, "text", [1, 2],
])
def test_json_output_is_json_dumps_with_indent_byte_for_byte(data):
    import json

    from modelmgr.commands._common import dumps_indented

    assert dumps_indented(data) == json.dumps(data, indent=2, default=str)
