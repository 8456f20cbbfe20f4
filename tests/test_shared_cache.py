"""Several cache directories: a personal cache in front of a team's shared one (``[cache] dirs``).

Models in the shared cache are found without the network and listed as read-only; pulls write
only to the first writable directory. Tests run as root, where permission bits stop nothing, so
an unwritable directory here is one that sits under a regular file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelmgr.project.config import load_config
from modelmgr.cache.layout import RepoPaths
from modelmgr.fetch.pull import ensure_snapshot, find_cached, pull
from modelmgr.project.refs import ModelRef
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under a folder with its size and mtime: to show nothing changed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture
def shared(tmp_path, local_hub) -> Path:
    """A team cache that already holds the tiny model, filled by someone else's pull."""
    folder = tmp_path / "team" / "hub"
    environ = {**os.environ, "HF_HUB_CACHE": str(folder), "HF_ENDPOINT": local_hub.url}
    pull(TINY_MODEL_ID, config=load_config(environ=environ))
    local_hub.clear_requests()
    return folder


def use_dirs(*dirs: Path) -> None:
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f"[cache]\ndirs = {json.dumps([str(d) for d in dirs])}\n")


def test_a_model_only_in_the_shared_cache_is_found_without_the_network(capsys, monkeypatch, local_hub, shared):
    personal = Path(os.environ["HF_HUB_CACHE"])
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    use_dirs(shared)
    config = load_config()
    assert config.cache_dirs == (personal, shared) and config.cache_dir == personal

    commit = local_hub.commit(TINY_MODEL_ID)
    found = find_cached(ModelRef(TINY_MODEL_ID), config)
    assert found is not None and found.path == RepoPaths(shared, TINY_MODEL_ID).snapshot(commit)
    assert ensure_snapshot(TINY_MODEL_ID, config).path == found.path
    assert local_hub.requests == []  # what `run` does: nothing asked of the Hub
    assert not personal.exists() or not any(personal.iterdir())

    outcome = cli(capsys, "list")
    assert outcome.code == 0, outcome.err
    row = next(line for line in outcome.out.splitlines() if line.startswith(TINY_MODEL_ID))
    assert row.rstrip().endswith("read-only")
    (entry,) = json.loads(cli(capsys, "list", "--json").out)
    assert entry["read_only"] is True and entry["cache_dir"] == str(shared) and entry["path"] == str(found.path)


def test_a_pull_writes_only_to_the_personal_cache(capsys, monkeypatch, local_hub, shared):
    personal = Path(os.environ["HF_HUB_CACHE"])
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    use_dirs(shared)
    before = tree(shared)
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    assert tree(shared) == before
    commit = local_hub.commit(TINY_MODEL_ID)
    assert (RepoPaths(personal, TINY_MODEL_ID).snapshot(commit) / "config.json").is_file()
    listed = json.loads(cli(capsys, "list", "--json").out)
    assert sorted((e["cache_dir"], e["read_only"]) for e in listed) == sorted([(str(personal), False), (str(shared), True)])
    # `rm` takes the personal copy and leaves the team's alone.
    assert cli(capsys, "rm", TINY_MODEL_ID, "-y").code == 0
    assert tree(shared) == before and find_cached(ModelRef(TINY_MODEL_ID), load_config()).path.is_relative_to(shared)


def test_the_first_writable_directory_takes_the_writes(capsys, monkeypatch, tmp_path, local_hub, shared):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file: nothing can be created under it, even by root")
    blocked = blocker / "hub"
    personal = tmp_path / "personal" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(blocked))
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    use_dirs(personal, shared)
    config = load_config()
    assert config.cache_dirs == (blocked, personal, shared) and config.cache_dir == personal

    before = tree(shared)
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--include", "config.json")
    assert outcome.code == 0, outcome.err
    assert (RepoPaths(personal, TINY_MODEL_ID).snapshot(local_hub.commit(TINY_MODEL_ID)) / "config.json").is_file()
    assert tree(shared) == before and blocker.is_file()
    listed = json.loads(cli(capsys, "list", "--json").out)
    assert sorted((e["cache_dir"], e["read_only"]) for e in listed) == sorted([(str(personal), False), (str(shared), True)])
