"""Disk space: the free space is compared with the bytes still to fetch before the first byte;
a disk that fills up mid-way stops the pull with a clear error and keeps what resumes."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import namedtuple
from pathlib import Path

import pytest

from modelmgr.fetch import pull as pull_module
from modelmgr.fetch.download import state_file
from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import ShortBody, Status
from modelmgr.units import format_size

from .helpers import cli, small_repo, hf_cache as cache, serve

MiB = 1024 * 1024
REPO = "org/disk"
WEIGHTS = 8 * MiB  # above download.SMALL_FILE: kept across runs
SMALL = 24 + 19  # config.json + tokenizer.json
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    return small_repo(root, weights=WEIGHTS, seed=4)


@pytest.fixture
def hub(hub_factory, repo_dir):
    return serve(hub_factory, REPO, repo_dir)



def etag_of(repo_dir: Path) -> str:
    return hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()


def fake_free_space(monkeypatch, free: int) -> list[Path]:
    """shutil.disk_usage as modelmgr.fetch.pull sees it (a filesystem fact; the HTTP side stays real)."""
    asked: list[Path] = []

    def disk_usage(path):
        asked.append(Path(path))
        return Usage(10 * free + 1, 9 * free + 1, free)

    monkeypatch.setattr(pull_module.shutil, "disk_usage", disk_usage)
    return asked


def file_gets(hub) -> list:
    return [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_not_enough_free_space_is_refused_before_the_first_byte_with_the_numbers(capsys, monkeypatch, hub):
    free = 5 * MiB
    asked = fake_free_space(monkeypatch, free)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 1
    assert outcome.err == (
        f"Error: not enough free space in {cache()}: the pull needs {format_size(WEIGHTS + SMALL)} more, "
        f"{format_size(free)} is free. Free space (modelmgr prune, modelmgr rm) or point HF_HUB_CACHE at a larger disk.\n")
    assert asked == [cache()]
    assert file_gets(hub) == []


def test_the_check_keeps_a_margin(capsys, monkeypatch, hub):
    fake_free_space(monkeypatch, WEIGHTS + SMALL + pull_module.disk_margin(WEIGHTS + SMALL) - 1)
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 1
    fake_free_space(monkeypatch, WEIGHTS + SMALL + pull_module.disk_margin(WEIGHTS + SMALL))
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0


def test_a_small_pull_on_a_nearly_full_disk_is_not_refused_by_a_margin_larger_than_itself(capsys, monkeypatch, hub_factory, tmp_path):
    # 650 kB to fetch, 42 MB free: the fixed 64 MB margin used to refuse it, saying it "needs
    # 650 kB more, 42 MB is free".
    small = small_repo(tmp_path / "small", weights=650_000, seed=9)
    hub = serve(hub_factory, REPO, small)
    fake_free_space(monkeypatch, 42_000_000)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err


def test_a_refusal_because_of_the_margin_names_the_margin(capsys, monkeypatch, hub):
    free = WEIGHTS + SMALL + 1
    fake_free_space(monkeypatch, free)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 1
    margin = pull_module.disk_margin(WEIGHTS + SMALL)
    assert f"plus a safety margin of {format_size(margin)}" in outcome.err, outcome.err


def test_the_check_counts_only_the_bytes_still_missing(capsys, monkeypatch, hub, repo_dir):
    half = WEIGHTS // 2
    hub.add_fault(ShortBody(missing_bytes=WEIGHTS - half), path="*/model.safetensors")
    hub.add_fault(Status(500), path="*/model.safetensors", times=None)
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 1
    hub.clear_faults()
    # The small files are in the cache and half the weights are on disk: half is what is missing.
    fake_free_space(monkeypatch, (WEIGHTS - half) + pull_module.disk_margin(WEIGHTS - half))
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err


def test_a_disk_filling_up_mid_way_stops_clearly_and_the_next_pull_resumes(capsys, monkeypatch, hub, repo_dir):
    from modelmgr.fetch import download
    room = 3 * MiB + 12345
    written = [0]
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if written[0] + len(data) > room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(data)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(download.os, "pwrite", pwrite)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    monkeypatch.setattr(download.os, "pwrite", real_pwrite)
    assert outcome.code == 1
    assert outcome.err.strip().splitlines()[-1] == (
        "Error: the disk filled up while writing model.safetensors. What was downloaded is kept: free some space "
        "(modelmgr prune) and run the same pull again to resume.")

    etag = etag_of(repo_dir)
    paths = RepoPaths(cache(), REPO)
    state = json.loads(state_file(paths, etag).read_text())
    kept = sum(done for _, _, done in state["parts"])
    assert 0 < kept <= room and paths.incomplete(etag).stat().st_size >= kept
    assert not paths.blob(etag).exists()

    hub.clear_requests()
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    (resumed,) = [r for r in file_gets(hub) if r.path.endswith("/model.safetensors")]
    assert resumed.headers["range"] == f"bytes={kept}-{WEIGHTS - 1}"
    blob = (paths.snapshot(hub.commit(REPO)) / "model.safetensors").resolve()
    assert blob == paths.blob(etag) and hashlib.sha256(blob.read_bytes()).hexdigest() == etag
