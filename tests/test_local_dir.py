"""`pull --local-dir`: plain files a user can edit without touching the cache; and --quiet."""
from __future__ import annotations

import os

import pytest

from modelmgr.testing import TINY_MODEL_ID
from tests.helpers import cli, hf_cache


def test_local_dir_holds_plain_copies_that_from_pretrained_loads(capsys, local_hub, tmp_path):
    target = tmp_path / "export"
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url, "--local-dir", str(target))
    assert outcome.code == 0, outcome.err
    assert f"Copied to {target}" in outcome.out
    weights = target / "model.safetensors"
    assert weights.is_file() and not weights.is_symlink() and weights.stat().st_nlink == 1
    blob = next((hf_cache() / "models--modelmgr-test--tiny-llama" / "snapshots").iterdir()) / "model.safetensors"
    assert weights.read_bytes() == blob.read_bytes()
    assert not os.path.samefile(weights, blob)
    # An edit in the folder cannot reach the cache.
    original = blob.read_bytes()
    with open(target / "config.json", "a") as handle:
        handle.write("\n")
    assert blob.read_bytes() == original

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(target))
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    assert model.config.model_type == "llama" and tokenizer("hello")["input_ids"]

    again = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url, "--local-dir", str(target))
    assert again.code == 0 and "already there" in again.out


def test_local_dir_inside_the_cache_is_refused(capsys, local_hub):
    cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url)
    snapshot = next((hf_cache() / "models--modelmgr-test--tiny-llama" / "snapshots").iterdir())
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url, "--local-dir", str(snapshot / "x"))
    assert outcome.code == 1 and "inside the cache" in outcome.err


def test_quiet_prints_nothing_on_success(capsys, local_hub):
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url, "--quiet")
    assert outcome.code == 0 and outcome.out == "" and outcome.err == ""
    for args in (("prune", "--incomplete", "-y", "-q"), ("rm", TINY_MODEL_ID, "-y", "--quiet")):
        outcome = cli(capsys, *args)
        assert outcome.code == 0 and outcome.out == "", args
    assert not (hf_cache() / "models--modelmgr-test--tiny-llama").exists()


def test_hf_hub_disable_progress_bars_keeps_only_notices(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url)
    assert outcome.code == 0 and "fetching" not in outcome.err
    assert outcome.out.startswith("Pulled ")
