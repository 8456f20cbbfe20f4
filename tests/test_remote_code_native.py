"""A repo with a model_type transformers implements plus an auto_map to its own code (the shape of
microsoft/Phi-3-mini-4k-instruct) runs on transformers' class without --trust-remote-code, and
none of the repo's code runs: its module raises if it is ever imported."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from modelmgr.testing import build_tiny_model

from .helpers import cli


@pytest.fixture
def phi3_shaped(hub_factory, tmp_path: Path):
    folder = build_tiny_model(tmp_path / "phi3-shaped", auto_map=True, native_type=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "AutoModelForCausalLM" in config["auto_map"]
    hub = hub_factory()
    return hub, hub.add_repo("org/phi3-shaped", folder)


def test_runs_on_the_native_class_and_runs_none_of_its_code(capsys, phi3_shaped) -> None:
    hub, commit = phi3_shaped
    outcome = cli(capsys, "run", "org/phi3-shaped", "hello", "--temperature", "0", "--max-new-tokens", "4", "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert outcome.out.strip()
    notice = [line for line in outcome.err.splitlines() if "also ships its own Python code" in line]
    assert notice == [
        "org/phi3-shaped also ships its own Python code (config.json auto_map); loading it with the built-in llama "
        f"implementation, which runs none of it. To run the repo's code instead: --trust-remote-code with org/phi3-shaped@{commit}."
    ]
    # The module was downloaded (for --trust-remote-code offline) but never imported or copied to run.
    snapshot = next(Path(os.environ["HF_HUB_CACHE"]).glob("models--org--phi3-shaped/snapshots/*"))
    assert (snapshot / "modeling_tiny.py").is_file()
    assert not any("modeling_tiny" in name for name in sys.modules)
    assert not list(Path(os.environ["HF_HOME"]).rglob("modules/**/modeling_tiny.py"))


def test_a_custom_type_is_still_refused(capsys, hub_factory, tmp_path: Path) -> None:
    hub = hub_factory()
    hub.add_repo("org/custom", build_tiny_model(tmp_path / "custom", auto_map=True))
    outcome = cli(capsys, "run", "org/custom", "hello", "--endpoint", hub.url)
    assert outcome.code == 1 and "ships its own Python code" in outcome.err
