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


def _big_repo(hub_factory, tmp_path):
    from tests.helpers import small_repo

    hub = hub_factory()
    hub.add_repo("org/slow", small_repo(tmp_path / "slow", weights=3_000_000, seed=5))
    return hub


def test_hf_hub_download_timeout_bounds_a_stalled_body_and_the_pull_resumes(capsys, monkeypatch, hub_factory, tmp_path):
    from modelmgr.testing import PauseMidBody

    hub = _big_repo(hub_factory, tmp_path)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    hub.add_fault(PauseMidBody(1_000_000, 4), path="*/model.safetensors", method="GET")
    began = time.monotonic()
    outcome = cli(capsys, "pull", "org/slow", "--endpoint", hub.url, "--connections", "1")
    assert outcome.code == 0, outcome.err
    assert time.monotonic() - began < 3.5, "the stalled body was waited out instead of timed out"
    answers = hub.file_answers("model.safetensors")
    assert len(answers) == 2 and answers[1].headers.get("range", "").startswith("bytes=")


def test_the_metadata_timeout_does_not_cut_a_slow_body(capsys, monkeypatch, hub_factory, tmp_path):
    from modelmgr.testing import PauseMidBody

    hub = _big_repo(hub_factory, tmp_path)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.3")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    hub.add_fault(PauseMidBody(1_000_000, 1), path="*/model.safetensors", method="GET")
    outcome = cli(capsys, "pull", "org/slow", "--endpoint", hub.url, "--connections", "1")
    assert outcome.code == 0, outcome.err
    assert len(hub.file_answers("model.safetensors")) == 1
