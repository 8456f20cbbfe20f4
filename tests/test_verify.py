"""``modelmgr verify``: re-hash a real pulled cache, find what was damaged on disk, repair it from the Hub."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli, hf_cache, pulled, run_modelmgr  # noqa: F401 - pulled: a fixture
from .test_cache import C1, build_repo


def flip_one_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def blob_of(paths: RepoPaths, commit: str, name: str) -> Path:
    return (paths.snapshot(commit) / name).resolve()


def resolve_gets(hub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_a_healthy_cache_verifies(capsys, pulled):
    outcome = cli(capsys, "verify")
    assert outcome.code == 0, outcome.err
    assert f"{TINY_MODEL_ID}: OK, 6 blob(s)" in outcome.out
    assert outcome.out.splitlines()[-1].startswith("All well: 6 blob(s)")
    assert f"Verifying [1/1] {TINY_MODEL_ID}" in outcome.err  # the progress line, on stderr


def test_one_flipped_byte_is_found_and_repaired_from_the_hub(capsys, pulled):
    hub, paths, commit = pulled
    weights = blob_of(paths, commit, "model.safetensors")
    assert len(weights.name) == 64  # an LFS blob, named by its sha256
    flip_one_byte(weights)

    outcome = cli(capsys, "verify")
    assert outcome.code == 1
    assert f"corrupt     {weights}: content does not match its sha256" in outcome.out
    assert f"(model.safetensors @ {commit[:8]})" in outcome.out
    error = outcome.err.splitlines()[-1]
    assert error.startswith("Error: verify found problems: 1 corrupt in 1 repo(s) (6 blob(s)")
    assert error.endswith("Run `modelmgr verify --repair` to fetch the bad files again.")

    outcome = cli(capsys, "verify", "--repair")
    assert outcome.code == 0, outcome.out + outcome.err
    assert f"{TINY_MODEL_ID}: repaired 1 file(s) @ {commit[:8]}, deleted 1 corrupt blob(s)" in outcome.out
    assert "After repair:" in outcome.out and outcome.out.splitlines()[-1].startswith("All well")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == weights.name
    # Fetched again at the exact commit, and nothing else was.
    assert resolve_gets(hub) == [f"/{TINY_MODEL_ID}/resolve/{commit}/model.safetensors"]
    assert cli(capsys, "verify").code == 0


def test_git_sha1_blobs_are_checked_too(capsys, pulled):
    _, paths, commit = pulled
    config = blob_of(paths, commit, "config.json")
    assert len(config.name) == 40
    flip_one_byte(config, 0)
    outcome = cli(capsys, "verify", TINY_MODEL_ID)
    assert outcome.code == 1 and f"{config}: content does not match its git blob sha1" in outcome.out


def test_missing_and_unexpected_files_and_their_repair(capsys, pulled):
    hub, paths, commit = pulled
    tokenizer = blob_of(paths, commit, "tokenizer.json")
    tokenizer.unlink()  # the snapshot link now dangles
    (paths.snapshot(commit) / "generation_config.json").unlink()  # the manifest still lists it
    stray = paths.blobs / "notes.txt"
    stray.write_text("left here by hand")
    outcome = cli(capsys, "verify", "--json")
    assert outcome.code == 1
    report = json.loads(outcome.out)["before"]["repos_checked"][0]
    assert sorted((m["path"], m["reason"]) for m in report["missing"]) == [
        ("generation_config.json", "listed in the manifest, absent from the snapshot"),
        ("tokenizer.json", "broken link: its blob is gone"),
    ]
    assert report["unexpected"] == [str(stray)] and report["corrupt"] == []

    outcome = cli(capsys, "verify", "--repair")
    # The two files come back; the stray file is not modelmgr's to delete, so verify still fails.
    assert outcome.code == 1
    assert "repaired 2 file(s)" in outcome.out and "remove it by hand" in outcome.out
    assert sorted(resolve_gets(hub)) == [f"/{TINY_MODEL_ID}/resolve/{commit}/tokenizer.json"]  # the other blob was there
    assert (paths.snapshot(commit) / "generation_config.json").is_file() and tokenizer.is_file()
    stray.unlink()
    assert cli(capsys, "verify").code == 0


def test_verify_does_not_count_as_a_use(capsys, pulled):
    _, paths, commit = pulled
    weights = blob_of(paths, commit, "model.safetensors")
    os.utime(weights, (1_000_000_000, weights.stat().st_mtime))
    assert cli(capsys, "verify").code == 0
    assert weights.stat().st_atime == 1_000_000_000


def test_verify_one_model_one_revision_and_errors(capsys):
    cache = hf_cache()
    good = build_repo(cache, "org/good", {C1: {"a.bin": b"a" * 100}}, refs={"main": C1})
    bad = build_repo(cache, "org/bad", {C1: {"b.bin": b"b" * 100}}, refs={"main": C1})
    flip_one_byte(next(bad.blobs.iterdir()))
    assert cli(capsys, "verify", "org/good").code == 0
    assert cli(capsys, "verify", "org/good@main").code == 0
    assert cli(capsys, "verify", "org/bad@11111111").code == 1
    outcome = cli(capsys, "verify", "org/nope")
    assert outcome.code == 1 and "org/nope is not in the cache" in outcome.err
    outcome = cli(capsys, "verify", "org/good@v9")
    assert outcome.code == 1 and "revision 'v9' of org/good is not cached" in outcome.err
    assert good.root.exists()


def test_read_only_caches_are_checked_but_never_repaired(capsys, tmp_path):
    shared = tmp_path / "shared"
    team = build_repo(shared, "org/team", {C1: {"w.bin": b"w" * 100}}, refs={"main": C1})
    blob = next(team.blobs.iterdir())
    flip_one_byte(blob)
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[cache]\ndirs = ["{shared}"]\n')
    outcome = cli(capsys, "verify", "--repair")
    assert outcome.code == 1
    assert "org/team (read-only cache): 1 corrupt" in outcome.out
    assert "could not repair" in outcome.out and "read-only cache" in outcome.out
    assert blob.exists()


def test_regular_files_in_snapshots_are_noted_and_exit_code_from_a_real_process(tmp_path):
    cache = hf_cache()
    paths = build_repo(cache, "org/copies", {C1: {"a.bin": b"a" * 10}}, refs={"main": C1})
    (paths.snapshot(C1) / "README.md").write_text("a copy, not a link\n")
    outcome = run_modelmgr("verify")
    assert outcome.code == 0, outcome.err
    assert "regular file" in outcome.out
    flip_one_byte(next(paths.blobs.iterdir()))
    outcome = run_modelmgr("verify")
    assert outcome.code == 1 and outcome.err.splitlines()[-1].startswith("Error: verify found problems: 1 corrupt")


def test_a_link_to_the_wrong_blob_is_caught_by_the_manifest_and_relinked(capsys, pulled):
    hub, paths, commit = pulled
    link = paths.snapshot(commit) / "config.json"
    right = link.resolve()
    wrong = blob_of(paths, commit, "generation_config.json")
    link.unlink()
    os.symlink(os.path.relpath(wrong, link.parent), link)  # valid content, but another file's
    outcome = cli(capsys, "verify")
    assert outcome.code == 1
    assert f"links to blob {wrong.name[:12]}, the manifest expects {right.name[:12]}" in outcome.out
    outcome = cli(capsys, "verify", "--repair")
    assert outcome.code == 0, outcome.out + outcome.err
    assert link.resolve() == right and resolve_gets(hub) == []  # the right blob was still there
