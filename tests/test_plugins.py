"""Plugins as users meet them: `modelmgr backends`, plugin commands, MODELMGR_LOAD_PLUGINS and
broken plugins, through CliRunner and through real subprocesses with real entry points."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from modelmgr import hookimpl
from modelmgr.cli import cli
from modelmgr.run.plugins import get_plugin_manager

EXAMPLE_INSTALLED = any(ep.name == "example" for ep in metadata.entry_points(group="modelmgr"))
needs_example = pytest.mark.skipif(not EXAMPLE_INSTALLED, reason="modelmgr-example is not installed: pip install -e plugins/example")


def modelmgr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelmgr", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_backends_json_here() -> None:
    result = CliRunner().invoke(cli, ["backends", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for row in rows.values():
        assert {"name", "source", "available", "reason", "description", "plugin"} <= set(row)
        assert isinstance(row["available"], bool)
    assert rows["cpu"]["available"] and rows["cpu"]["source"] == "built-in" and rows["cpu"]["device"] == "cpu"
    assert rows["int8"]["available"] and rows["int8"]["source"] == "built-in"
    if not rows["cuda"]["available"]:  # this machine: torch's CPU build
        assert rows["cuda"]["reason"].startswith("no CUDA device: ")


def test_backends_table() -> None:
    result = CliRunner().invoke(cli, ["backends"], catch_exceptions=False)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "AVAILABLE", "MEMORY", "NOTES"]
    cpu = next(line for line in lines if line.startswith("cpu "))
    assert "built-in" in cpu and " yes " in cpu and "free on cpu" in cpu
    cuda = next(line for line in lines if line.startswith("cuda "))
    assert " no " in cuda or " yes " in cuda


def test_listing_does_not_import_torch() -> None:
    code = "import sys; from modelmgr.cli import main\ntry: main(['backends'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "False"


def test_register_commands_adds_a_subcommand() -> None:
    @click.command("hello-plugin")
    @click.option("--name", default="world")
    def hello(name: str) -> None:
        """Say hello from a plugin."""
        click.echo(f"hello {name}")

    class CommandPlugin:
        @hookimpl
        def register_commands(self, cli):
            cli.add_command(hello)

    manager = get_plugin_manager()
    manager.register(CommandPlugin(), name="command-plugin")
    try:
        runner = CliRunner()
        assert "hello-plugin" in runner.invoke(cli, ["--help"]).stdout
        assert runner.invoke(cli, ["hello-plugin", "--name", "tests"]).stdout == "hello tests\n"
    finally:
        manager.unregister(name="command-plugin")
    assert CliRunner().invoke(cli, ["hello-plugin"]).exit_code == 2  # gone again


def fake_distribution(root: Path, module_source: str) -> Path:
    """An installed distribution as importlib.metadata sees one: a dist-info folder with an
    entry point in the `modelmgr` group, and its module, on a folder put on PYTHONPATH."""
    info = root / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[modelmgr]\nbroken = broken_plugin_module\n")
    (root / "broken_plugin_module.py").write_text(module_source)
    return root


def test_a_broken_plugin_is_reported_and_the_rest_works(tmp_path: Path) -> None:
    site = fake_distribution(tmp_path / "site", 'raise ImportError("needs libfoo, which is not installed")\n')
    env = {"PYTHONPATH": str(site)}
    result = modelmgr("backends", env=env)
    assert result.returncode == 0, result.stderr
    assert "cpu " in result.stdout and "int8 " in result.stdout
    assert "Plugins that failed to load:\n  broken (broken-plugin 1.0): ImportError: needs libfoo, which is not installed" in result.stdout

    result = modelmgr("backends", "--json", env=env)
    assert result.returncode == 0 and "cpu" in {row["name"] for row in json.loads(result.stdout)}
    assert "Warning: plugin 'broken' (broken-plugin 1.0) failed to load: ImportError: needs libfoo" in result.stderr
    assert modelmgr("--help", env=env).returncode == 0


def test_a_plugin_whose_hook_raises_is_reported(tmp_path: Path) -> None:
    source = "from modelmgr import hookimpl\n\n@hookimpl\ndef register_backends(register):\n    raise ValueError('bad config')\n"
    site = fake_distribution(tmp_path / "site", source)
    result = modelmgr("backends", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0 and "cpu " in result.stdout
    assert "Warning: plugin 'broken' failed in register_backends: ValueError: bad config" in result.stderr


def test_load_plugins_allowlist() -> None:
    names = lambda result: [row["name"] for row in json.loads(result.stdout)]  # noqa: E731
    assert names(modelmgr("backends", "--json", env={"MODELMGR_LOAD_PLUGINS": ""})) == []
    assert "No backends" in modelmgr("backends", env={"MODELMGR_LOAD_PLUGINS": ""}).stdout
    assert names(modelmgr("backends", "--json", env={"MODELMGR_LOAD_PLUGINS": "transformers"})) == ["cpu", "cuda", "int8"]


@needs_example
def test_load_plugins_hides_the_example(tiny_model_dir: Path) -> None:
    assert "example" in [row["name"] for row in json.loads(modelmgr("backends", "--json").stdout)]
    result = modelmgr("run", str(tiny_model_dir), "hi", "--backend", "example", env={"MODELMGR_LOAD_PLUGINS": "transformers"})
    assert result.returncode == 2  # a backend that is not there is a usage mistake
    assert result.stderr.strip() == "Error: Unknown backend 'example'. Valid backends: cpu, cuda, int8."
