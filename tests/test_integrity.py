"""Verified as it streams: a flipped byte never becomes a blob or a snapshot file; a good second
endpoint repairs it. Large files travel as several ranges over several connections, and the
hash still covers every byte of every range."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelmgr.fetch.download import state_file
from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import BadEtag, FlipByte, git_blob_sha1

from .helpers import cli, hf_cache as cache, small_repo

MiB = 1024 * 1024
REPO = "org/integrity"
SMALL = 300_000
PARTS = 4
LARGE = PARTS * 32 * MiB  # parts.part_size over --connections 4: four ranges of 32 MiB


def make_repo(root: Path, weights: int, seed: int = 3) -> Path:
    return small_repo(root, weights=weights, seed=seed)


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", SMALL)


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("large") / "repo", LARGE)



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weight_gets(hub) -> list:
    return hub.file_answers("model.safetensors")  # from the Hub itself, or from its CDN after a 302


def assert_refused(outcome, repo_dir: Path, commit: str, *, name: str = "model.safetensors") -> None:
    """Exit 1, a one-line verification error, and nothing of the file in the cache."""
    assert outcome.code == 1
    last = outcome.err.strip().splitlines()[-1]
    assert last.startswith(f"Error: {name} failed verification: expected ")
    paths = RepoPaths(cache(), REPO)
    data = (repo_dir / name).read_bytes()
    etag = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else git_blob_sha1(data)
    assert f"expected {'sha256' if len(etag) == 64 else 'git sha1'} {etag}" in last
    assert not paths.blob(etag).exists()
    assert not paths.incomplete(etag).exists() and not state_file(paths, etag).exists()
    assert not os.path.lexists(paths.snapshot(commit) / name)
    assert paths.read_ref("main") is None


def test_a_flipped_byte_on_the_only_endpoint_is_refused(capsys, hub_factory, small_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, small_dir)
    hub.add_fault(FlipByte(SMALL // 2), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert_refused(outcome, small_dir, commit)
    assert "content hash mismatch" in outcome.err
    # The other files are fine and kept; the next pull fetches only the refused one.
    hub.clear_requests()
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    assert [r.path.rsplit("/", 1)[1] for r in hub.requests if "/resolve/" in r.path] == ["model.safetensors"]
    assert (RepoPaths(cache(), REPO).snapshot(commit) / "model.safetensors").read_bytes() == (small_dir / "model.safetensors").read_bytes()


def test_a_flipped_byte_in_a_git_file_is_refused_too(capsys, hub_factory, small_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, small_dir)
    hub.add_fault(FlipByte(3), path="*/config.json")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert_refused(outcome, small_dir, commit, name="config.json")


def test_a_flipped_byte_is_repaired_from_a_second_endpoint(capsys, hub_factory, small_dir):
    bad, good = hub_factory(), hub_factory()
    commit = bad.add_repo(REPO, small_dir)
    good.add_repo(REPO, small_dir)
    bad.add_fault(FlipByte(0), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", bad.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert f"content hash mismatch from {bad.url}; discarded" in outcome.err
    assert [r.status for r in weight_gets(bad)] == [200] and [r.status for r in weight_gets(good)] == [200]
    link = RepoPaths(cache(), REPO).snapshot(commit) / "model.safetensors"
    assert link.read_bytes() == (small_dir / "model.safetensors").read_bytes()
    assert link.resolve().name == sha256(small_dir / "model.safetensors")


def test_a_flipped_byte_on_every_endpoint_names_each(capsys, hub_factory, small_dir):
    first, second = hub_factory(), hub_factory()
    commit = first.add_repo(REPO, small_dir)
    second.add_repo(REPO, small_dir)
    for hub in (first, second):
        hub.add_fault(FlipByte(7), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert_refused(outcome, small_dir, commit)
    assert f"(from {first.url}, {second.url})" in outcome.err.strip().splitlines()[-1]


def test_a_wrong_but_well_formed_etag_is_refused_by_the_hash(capsys, hub_factory, small_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, small_dir)
    hub.add_fault(BadEtag("e" * 64, files="model.safetensors"), times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 1
    assert f"model.safetensors failed verification: expected sha256 {'e' * 64}" in outcome.err
    assert not (RepoPaths(cache(), REPO).blob("e" * 64)).exists()
    assert not os.path.lexists(RepoPaths(cache(), REPO).snapshot(commit) / "model.safetensors")


# -- several ranges over several connections -------------------------------------------------------

def ranges(requests) -> list[tuple[int, int]]:
    spans = []
    for request in requests:
        first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
        spans.append((int(first), int(last)))
    return sorted(spans)


@pytest.mark.slow
def test_a_large_file_is_fetched_as_several_ranges_over_several_connections(capsys, hub_factory, large_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, large_dir)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url, "--connections", str(PARTS))
    assert outcome.code == 0, outcome.err
    gets = weight_gets(hub)
    assert len(gets) == PARTS and all(r.status == 206 for r in gets)
    step = LARGE // PARTS
    assert ranges(gets) == [(i * step, (i + 1) * step - 1) for i in range(PARTS)]
    link = RepoPaths(cache(), REPO).snapshot(commit) / "model.safetensors"
    assert link.resolve().name == sha256(large_dir / "model.safetensors") == sha256(link)


@pytest.mark.slow
def test_a_flip_in_a_later_range_of_a_split_file_is_caught(capsys, hub_factory, large_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, large_dir)
    # Every range request gets the same fault rule: only the range holding the offset is corrupted.
    hub.add_fault(FlipByte(LARGE - LARGE // PARTS + 12345), path="*/model.safetensors", times=PARTS)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url, "--connections", str(PARTS))
    assert len(weight_gets(hub)) == PARTS
    assert_refused(outcome, large_dir, commit)
