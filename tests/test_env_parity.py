"""huggingface_hub's environment variables that modelmgr honours the same way."""
from __future__ import annotations

import time

from modelmgr.project.config import load_config
from modelmgr.testing import Stall, TINY_MODEL_ID
from tests.helpers import cli


def test_transformers_offline_turns_offline_on_and_hf_hub_offline_beats_it():
    assert load_config(environ={"TRANSFORMERS_OFFLINE": "1"}).offline is True
    assert load_config(environ={"TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "0"}).offline is False


def test_timeouts_and_progress_bars_come_from_the_hf_variables():
    config = load_config(environ={"HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "45",
                                  "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert (config.metadata_timeout, config.download_timeout, config.progress) == (3.0, 45.0, False)
    assert config.sources["hub.metadata_timeout"] == "environment $HF_HUB_ETAG_TIMEOUT"
    assert load_config(environ={}).progress is True


def test_transformers_offline_keeps_a_pull_off_the_network(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url)
    assert outcome.code == 1 and "offline" in outcome.err
    assert local_hub.requests == []


def test_hf_hub_etag_timeout_bounds_a_metadata_answer(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    local_hub.add_fault(Stall(3), path="*/revision/*", times=None)
    began = time.monotonic()
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url)
    assert outcome.code == 1
    assert "within 0.5 s" in outcome.err
    assert time.monotonic() - began < 2.5  # two tries of 0.5 s, not the 30 s default
