"""Running the real command line from tests: in-process (fast) or as a subprocess (exact)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmgr.cli import main


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture, *args: str) -> Outcome:
    """``modelmgr ARGS`` through the same entry point the console script uses."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return Outcome(int(exited.value.code or 0), captured.out, captured.err)


def run_modelmgr(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120) -> Outcome:
    """``python -m modelmgr ARGS`` in a fresh process with the test's environment."""
    completed = subprocess.run(
        [sys.executable, "-m", "modelmgr", *args],
        env={**os.environ, **(env or {})}, input=input, capture_output=True, text=True, timeout=timeout,
    )
    return Outcome(completed.returncode, completed.stdout, completed.stderr)


def hf_cache() -> Path:
    """The test's own cache (tests/conftest.py points HF_HUB_CACHE at a temporary folder)."""
    return Path(os.environ["HF_HUB_CACHE"])


@pytest.fixture
def pulled(capsys, monkeypatch, local_hub):
    """The tiny model pulled from a LocalHub into the test's cache: (hub, repo paths, commit).
    A test module takes it with ``from .helpers import pulled``."""
    from modelmgr.cache.layout import RepoPaths
    from modelmgr.testing import TINY_MODEL_ID

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    local_hub.clear_requests()
    return local_hub, RepoPaths(hf_cache(), TINY_MODEL_ID), local_hub.commit(TINY_MODEL_ID)


def small_repo(root: Path, *, weights: int, seed: int) -> Path:
    """A three-file repo to serve: a config, a tokenizer and ``weights`` bytes of seeded noise."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}\n')
    (root / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "model.safetensors").write_bytes(random.Random(seed).randbytes(weights))
    return root


def serve(hub_factory, repo_id: str, folder: Path):
    """A started LocalHub (stopped at teardown by the fixture) serving ``folder`` as ``repo_id``."""
    hub = hub_factory()
    hub.add_repo(repo_id, folder)
    return hub
