"""`modelmgr lock` / `sync`: pinned commits and hashes, reproduced exactly on another cache."""
from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli


def project(text: str) -> Path:
    path = Path.cwd() / "modelmgr.toml"
    path.write_text(text)
    return path


def blob_hashes(cache: Path, commit: str) -> dict[str, str]:
    snapshot = RepoPaths(cache, TINY_MODEL_ID).snapshot(commit)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in snapshot.iterdir()}


def test_lock_then_frozen_sync_on_an_empty_cache_reproduces_the_files(capsys, monkeypatch, local_hub, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    outcome = cli(capsys, "lock")
    assert outcome.code == 0, outcome.err
    commit = local_hub.commit(TINY_MODEL_ID)
    lock = tomllib.loads((Path.cwd() / "modelmgr.lock").read_text())
    (model,) = lock["model"]
    assert (model["name"], model["id"], model["revision"], model["commit"]) == ("tiny", TINY_MODEL_ID, "main", commit)
    assert {f["path"] for f in model["files"]} >= {"config.json", "model.safetensors"}
    weights = next(f for f in model["files"] if f["path"] == "model.safetensors")
    assert len(weights["sha256"]) == 64

    first = Path(os.environ["HF_HUB_CACHE"])
    assert cli(capsys, "sync", "--frozen").code == 0
    second = tmp_path / "second-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(second))
    outcome = cli(capsys, "sync", "--frozen")
    assert outcome.code == 0, outcome.err
    assert "tiny: " in outcome.out and "verified" in outcome.out
    assert blob_hashes(first, commit) == blob_hashes(second, commit)
    assert RepoPaths(second, TINY_MODEL_ID).read_ref("main") == commit


def test_the_lock_pins_what_an_alias_means_even_after_the_branch_moves(capsys, monkeypatch, local_hub, tmp_path, tiny_model_dir):
    import shutil

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    assert cli(capsys, "lock").code == 0
    locked = local_hub.commit(TINY_MODEL_ID)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model_dir, moved)
    (moved / "README.md").write_text("new commit\n")
    assert local_hub.add_repo(TINY_MODEL_ID, moved) != locked
    outcome = cli(capsys, "pull", "tiny", "--json")
    assert outcome.code == 0, outcome.err
    assert f'"commit": "{locked}"' in outcome.out


def test_frozen_sync_fails_without_a_lock_or_when_the_config_changed(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    outcome = cli(capsys, "sync", "--frozen")
    assert outcome.code == 1 and "run `modelmgr lock` first" in outcome.err
    assert cli(capsys, "lock").code == 0
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\nrevision = "v2"\n')
    outcome = cli(capsys, "sync", "--frozen")
    assert outcome.code == 1 and "does not match the config" in outcome.err


def test_offline_sync_succeeds_when_everything_is_present_and_fails_otherwise(capsys, monkeypatch, local_hub, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    assert cli(capsys, "lock").code == 0
    assert cli(capsys, "sync").code == 0
    local_hub.clear_requests()
    assert cli(capsys, "sync", "--offline").code == 0
    assert local_hub.requests == []
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    outcome = cli(capsys, "sync", "--offline")
    assert outcome.code == 1 and "not in the cache" in outcome.err


def test_sync_detects_a_corrupted_blob(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    assert cli(capsys, "lock").code == 0
    assert cli(capsys, "sync").code == 0
    snapshot = RepoPaths(Path(os.environ["HF_HUB_CACHE"]), TINY_MODEL_ID).snapshot(local_hub.commit(TINY_MODEL_ID))
    blob = (snapshot / "config.json").resolve()
    data = bytearray(blob.read_bytes())
    data[3] ^= 0xFF
    blob.write_bytes(bytes(data))
    outcome = cli(capsys, "sync", "--offline")
    assert outcome.code == 1 and "config.json does not match its git-sha1" in outcome.err


def test_a_tampered_lockfile_is_refused_before_it_touches_the_cache(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    project(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\n')
    assert cli(capsys, "lock").code == 0
    lock = Path.cwd() / "modelmgr.lock"
    lock.write_text(lock.read_text().replace('revision = "main"', 'revision = "../../../../escaped"'))
    outcome = cli(capsys, "sync")
    assert outcome.code == 1 and "not a valid modelmgr lockfile" in outcome.err and "invalid revision" in outcome.err
    assert not any(Path(os.environ["HF_HUB_CACHE"]).parent.parent.rglob("escaped"))
