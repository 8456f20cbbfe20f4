"""`modelmgr show`: a model's facts and per-backend fit, from a local folder or pulled from a Hub."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from modelmgr.cli import cli
from modelmgr.testing import TINY_MODEL_ID


def show(*args: str):
    result = CliRunner().invoke(cli, ["show", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_show_a_local_folder(tiny_model_dir: Path) -> None:
    out = show(str(tiny_model_dir)).stdout
    assert "Architecture  LlamaForCausalLM (llama)" in out
    assert "Parameters    147.78K (safetensors headers)" in out
    assert "Context       512 tokens" in out and "Stored dtype  float32" in out
    assert "Weights       1 safetensors file" in out and "Remote code   no" in out
    assert "Memory needed with a 512-token context" in out
    cpu = next(line for line in out.splitlines() if line.startswith("cpu "))
    assert cpu.split()[1] == "float32" and cpu.endswith("yes")


def test_show_json_pulls_first_and_applies_max_memory(local_hub) -> None:
    data = json.loads(show(TINY_MODEL_ID, "--json", "--max-memory", "1KB", "--endpoint", local_hub.url).stdout)
    assert data["repo_id"] == TINY_MODEL_ID and data["commit"] == local_hub.commit(TINY_MODEL_ID)
    assert (data["parameters"], data["context_length"], data["stored_dtype"], data["weight_format"]) == (147776, 512, "float32", "safetensors")
    fits = {row["backend"]: row for row in data["backends"]}
    assert fits["cpu"]["available"] and not fits["cpu"]["fits"] and fits["cpu"]["free"] == 1000
    assert fits["cpu"]["needed"] > fits["cpu"]["free"]


def test_show_flags_remote_code_and_context(hub_factory, tmp_path: Path) -> None:
    from modelmgr.testing import build_tiny_model

    hub = hub_factory()
    hub.add_repo("org/remote", build_tiny_model(tmp_path / "remote", auto_map=True))
    out = show("org/remote", "--context-length", "64", "--endpoint", hub.url).stdout
    assert "Remote code   yes: config.json has auto_map" in out and "64-token context" in out
