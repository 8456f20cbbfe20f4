"""The example plugin as modelmgr sees it: discovered through its entry point, listed, and used
by `modelmgr run --backend example` on a model pulled from a local Hub."""
from __future__ import annotations

import json
from importlib import metadata

import pytest
from click.testing import CliRunner

from modelmgr.run.api import GenerationSettings, LoadOptions

from modelmgr.run.registry import get_registry
from modelmgr.run.chat import complete
from modelmgr.cli import cli
from modelmgr.run.plugins import plugin_infos
from modelmgr.testing import TINY_MODEL_ID

NOT_INSTALLED = "modelmgr-example is not installed: pip install -e plugins/example"
ExampleBackend = pytest.importorskip("modelmgr_example", reason=NOT_INSTALLED).ExampleBackend
pytestmark = pytest.mark.skipif(not any(ep.name == "example" for ep in metadata.entry_points(group="modelmgr")), reason=NOT_INSTALLED)


def test_discovered_through_its_entry_point() -> None:
    info = next(info for info in plugin_infos() if info.name == "example")
    assert (info.distribution, info.version, info.error) == ("modelmgr-example", "0.1.0", None)
    registry = get_registry()
    assert isinstance(registry.get("example"), ExampleBackend) and registry.plugins["example"] == "example"


def test_listed_by_modelmgr_backends() -> None:
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(cli, ["backends", "--json"]).stdout)}
    assert rows["example"]["source"] == "modelmgr-example 0.1.0"
    assert rows["example"]["available"] is True
    assert "example" in CliRunner().invoke(cli, ["backends"]).stdout


def test_run_with_the_example_backend(local_hub) -> None:
    result = CliRunner().invoke(
        cli, ["run", TINY_MODEL_ID, "hello brave new world", "--backend", "example", "--endpoint", local_hub.url],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "world new brave hello\n"
    assert f"Loading {TINY_MODEL_ID} on example (float32)" in result.stderr

    data = json.loads(CliRunner().invoke(cli, ["run", TINY_MODEL_ID, "a b c", "--backend", "example", "--json", "--offline"]).stdout)
    assert (data["reply"], data["backend"], data["prompt_tokens"], data["completion_tokens"]) == ("c b a", "example", 3, 3)


def test_generation_streams_and_cancels(tiny_model_dir) -> None:
    backend = ExampleBackend()
    loaded = backend.load(tiny_model_dir, LoadOptions())
    assert loaded.model["architecture"] == "LlamaForCausalLM"
    pieces: list[str] = []
    reply = complete(backend, loaded, [{"role": "user", "content": "one two three"}], GenerationSettings(), on_text=pieces.append)
    assert pieces == ["three", " two", " one"] and reply.completion_tokens == 3

    generation = backend.generate(loaded, [{"role": "user", "content": "a b c d"}], GenerationSettings(max_new_tokens=3))
    for _ in generation:
        generation.cancel()
    assert generation.completion_tokens == 1
