"""Servers that never quite fail: bodies dripped a byte at a time, answers that always end short,
pages that never end, a Range refused with 416. Every one of them must end on its own, move to
the next endpoint when there is one, and say why in one line when there is not."""
from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import CloseAfter, Drip, DripHeaders, Fault

from .helpers import cli, hf_cache as cache, run_modelmgr

REPO = "org/hangs"
WEIGHTS = 6 * 1024 * 1024  # above download.SMALL_FILE: a broken transfer keeps its bytes
# A hung pull must fail the test, not hang the suite: the fixed code ends each case in seconds.
HANG = 40


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama"}\n')
    (root / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "model.safetensors").write_bytes(random.Random(3).randbytes(WEIGHTS))
    return root


@pytest.fixture
def two_hubs(hub_factory, repo_dir):
    first, second = hub_factory(), hub_factory()
    first.add_repo(REPO, repo_dir)
    second.add_repo(REPO, repo_dir)
    return first, second


def write_config(*urls: str, timeout: float) -> None:
    text = f"[hub]\ntimeout = {timeout}\n"
    for i, url in enumerate(urls):
        text += f'[[hub.endpoints]]\nurl = "{url}"\nname = "mirror{i + 1}"\n'
    Path(os.environ["MODELMGR_CONFIG"]).write_text(text)


def pull_in_a_process():
    """The pull as a user runs it, in its own process, so a hang fails the test after HANG s."""
    started = time.monotonic()
    outcome = run_modelmgr("pull", REPO, timeout=HANG)
    return outcome, time.monotonic() - started


def weight_gets(hub) -> list:
    return [r for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]


def assert_pulled(repo_dir: Path, commit: str) -> None:
    snapshot = RepoPaths(cache(), REPO).snapshot(commit)
    data = (repo_dir / "model.safetensors").read_bytes()
    assert (snapshot / "model.safetensors").read_bytes() == data
    assert (snapshot / "model.safetensors").resolve().name == hashlib.sha256(data).hexdigest()


# -- bodies that drip ---------------------------------------------------------------------------

def test_a_mirror_dripping_its_body_is_left_for_the_next(two_hubs, repo_dir):
    dripping, good = two_hubs
    # 20 bytes a second: never silent for the 1 s read timeout, six days for the file.
    dripping.add_fault(Drip(interval=0.05), path="*/model.safetensors", times=None)
    write_config(dripping.url, good.url, timeout=1)
    outcome, elapsed = pull_in_a_process()
    assert outcome.code == 0, outcome.err
    assert "slower than" in outcome.err, outcome.err
    assert len(weight_gets(good)) >= 1
    assert_pulled(repo_dir, good.commit(REPO))
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_a_dripping_only_endpoint_fails_with_the_reason(hub_factory, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    hub.add_fault(Drip(interval=0.05), path="*/model.safetensors", times=None)
    write_config(hub.url, timeout=1)
    outcome, elapsed = pull_in_a_process()
    assert outcome.code == 1
    last = outcome.err.strip().splitlines()[-1]
    assert last.startswith("Error: could not download model.safetensors from any endpoint"), outcome.err
    assert "slower than" in last and "run the same pull again to resume" in last
    assert "Traceback" not in outcome.err
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_a_dripping_metadata_answer_falls_back(two_hubs, repo_dir):
    dripping, good = two_hubs
    # A tree listing of a few hundred bytes at 2 bytes a second.
    dripping.add_fault(Drip(interval=0.5), path="*/tree/*", times=None)
    write_config(dripping.url, good.url, timeout=1)
    outcome, elapsed = pull_in_a_process()
    assert outcome.code == 0, outcome.err
    assert "slower than" in outcome.err, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert elapsed < 20, f"took {elapsed:.1f}s"


# -- answers that always end short ----------------------------------------------------------------

def test_a_mirror_closing_every_answer_short_is_left_for_the_next(capsys, two_hubs, repo_dir):
    short, good = two_hubs
    # Every answer ends cleanly after 64 KiB of its declared length: each one "made progress",
    # which used to reset the attempt count, so the file came over in 96 requests to this mirror.
    short.add_fault(CloseAfter(64 * 1024), path="*/model.safetensors", times=None)
    write_config(short.url, good.url, timeout=5)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert len(weight_gets(short)) <= 2, [r.headers.get("range") for r in weight_gets(short)]
    assert len(weight_gets(good)) == 1
    assert "connection closed after" in outcome.err
    assert_pulled(repo_dir, good.commit(REPO))


def test_answers_always_short_on_the_only_endpoint_end_with_the_reason(capsys, hub_factory, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    hub.add_fault(CloseAfter(64 * 1024), path="*/model.safetensors", times=None)
    write_config(hub.url, timeout=5)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 1
    assert len(weight_gets(hub)) <= 2
    last = outcome.err.strip().splitlines()[-1]
    assert "connection closed after" in last and "run the same pull again to resume" in last


# -- pages that never end ---------------------------------------------------------------------------

class SamePageAgain(Fault):
    """Every tree page says the next page is itself: a cursor that never advances."""

    def __init__(self, path: str):
        self.path = path

    def edit_headers(self, headers: dict[str, str]) -> None:
        headers["Link"] = f'<{self.path}>; rel="next"'


def test_a_tree_whose_next_page_repeats_ends_at_once(capsys, hub_factory, repo_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, repo_dir)
    page = f"/api/models/{REPO}/tree/{commit}?recursive=true&expand=false"
    hub.add_fault(SamePageAgain(page), path="*/tree/*", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 1
    assert "repeats" in outcome.err.strip().splitlines()[-1], outcome.err
    tree_requests = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_requests) <= 4, f"{len(tree_requests)} requests for one listing"


def test_a_mirror_dripping_its_headers_is_left_for_the_next(two_hubs, repo_dir):
    dripping, good = two_hubs
    # A status line, then a header line every 0.2 s, never the blank line that ends the head.
    dripping.add_fault(DripHeaders(interval=0.2, seconds=HANG + 5), times=None)
    write_config(dripping.url, good.url, timeout=1)
    outcome, elapsed = pull_in_a_process()
    assert outcome.code == 0, outcome.err
    assert "did not send a complete answer head within 2 s" in outcome.err, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_a_metadata_answer_cut_short_is_never_taken_for_the_whole(capsys, two_hubs, repo_dir):
    short, good = two_hubs
    short.add_fault(CloseAfter(20), path="*/tree/*", times=None)
    write_config(short.url, good.url, timeout=5)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert "short of its Content-Length" in outcome.err, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
