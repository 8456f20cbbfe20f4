"""Distrust the server: hostile file names, malformed etags and commits, answers that are not
what was asked for, redirects to odd places, connections that break. Nothing may land outside
the cache, and the user gets one clear line."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import BadEtag, Hangup, HostileTree, HtmlPage, RedirectTo, ResetMidBody, Status
from modelmgr.testing.faults import HOSTILE_PATHS

from .helpers import cli, small_repo, hf_cache as cache, serve

REPO = "org/hostile"
WEIGHTS = 2 * 1024 * 1024


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    return small_repo(root, weights=WEIGHTS, seed=5)


@pytest.fixture
def hub(hub_factory, repo_dir):
    return serve(hub_factory, REPO, repo_dir)



def tree_outside_cache(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` but inside the cache, with what it is, its size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != cache()]
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def cache_files() -> list[Path]:
    return [p for p in cache().rglob("*") if not p.is_dir()] if cache().exists() else []


def one_line_error(outcome) -> str:
    assert outcome.code == 1, (outcome.out, outcome.err)
    assert "Traceback" not in outcome.err
    last = outcome.err.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    return last


# -- names -------------------------------------------------------------------------------------

EXTRA_HOSTILE = ("a/../../b", "./config.json", "a//b", ".git/config", ".modelmgr/partial/x.json", "line\nbreak", "x" * 2000)


@pytest.mark.parametrize("name", HOSTILE_PATHS + EXTRA_HOSTILE, ids=repr)
def test_a_hostile_file_name_refuses_the_repo_and_writes_nothing(capsys, tmp_path_factory, hub, name):
    hub.add_fault(HostileTree(paths=(name,)), times=None)
    base = tmp_path_factory.getbasetemp()
    before = tree_outside_cache(base)
    root_before = set(os.listdir("/"))
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    line = one_line_error(outcome)
    assert f"sent an unsafe file name {name!r}" in line and "refusing the repository" in line
    assert outcome.err.count("\n") == 1, outcome.err  # exactly one line, whatever the name holds
    assert tree_outside_cache(base) == before
    assert set(os.listdir("/")) == root_before
    assert cache_files() == []
    assert not any("/resolve/" in r.path for r in hub.requests), "no byte was fetched"


def test_a_hostile_name_anywhere_in_a_paged_tree_is_refused(capsys, hub):
    hub.tree_page_size = 1
    hub.add_fault(HostileTree(paths=("zzz/../../../escape",)), times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "unsafe file name 'zzz/../../../escape'" in line
    assert cache_files() == []


# -- etags and commits -----------------------------------------------------------------------------

@pytest.mark.parametrize("etag", ["../../x", "A" * 64, "abc", "0" * 63 + "/", ""])
def test_a_malformed_etag_in_the_tree_is_refused(capsys, hub, etag):
    hub.add_fault(BadEtag(etag, files="model.safetensors"), times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert f"malformed etag {etag!r} for 'model.safetensors'" in line
    assert cache_files() == []


def test_an_etag_header_that_disagrees_with_the_tree_is_refused(capsys, hub, repo_dir):
    hub.add_fault(BadEtag("../../x"), path="*/resolve/*/model.safetensors", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "could not download model.safetensors" in line and "with etag ../../x" in line
    assert not any(p.name.startswith("..") or p.name == "x" for p in cache().rglob("*"))
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    assert not RepoPaths(cache(), REPO).blob(etag).exists()


@pytest.mark.parametrize("sha", ["../../../tmp/x", "F" * 40, "f" * 39, 12345, None])
def test_a_malformed_commit_is_refused(capsys, hub, sha):
    body = json.dumps({"id": REPO, "sha": sha}).encode()
    hub.add_fault(Status(200, {"Content-Type": "application/json"}, body), path="*/revision/*", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert f"malformed commit {sha!r}" in line
    assert cache_files() == []


def test_a_file_served_from_another_commit_is_refused(capsys, hub, repo_dir):
    data = (repo_dir / "model.safetensors").read_bytes()
    headers = {"X-Repo-Commit": "f" * 40, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    hub.add_fault(Status(200, headers, data), path="*/model.safetensors", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert f"served model.safetensors from commit {'f' * 12}, not {hub.commit(REPO)[:12]}" in line


# -- answers that are not what was asked for ------------------------------------------------------

def test_an_html_page_with_status_200_is_never_taken_for_json(capsys, hub):
    hub.add_fault(HtmlPage(), times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "answered with an HTML page where JSON was expected" in line
    assert cache_files() == []


def test_an_html_page_with_status_200_is_never_taken_for_a_file(capsys, hub, repo_dir):
    hub.add_fault(HtmlPage(), path="*/resolve/*", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "answered" in line and "with an HTML page" in line
    paths = RepoPaths(cache(), REPO)
    assert not paths.blobs.exists() or not [p for p in paths.blobs.iterdir() if not p.name.endswith(".incomplete")]


def test_a_redirect_to_another_host_is_followed_and_checked(capsys, hub_factory, hub, repo_dir):
    cdn = hub_factory()
    cdn.add_repos_from(hub)
    hub.add_fault(RedirectTo(cdn.url), path="*/resolve/*", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert sorted(r.status for r in hub.requests if "/resolve/" in r.path) == [302, 302, 302]
    assert sorted(r.path.rsplit("/", 1)[1] for r in cdn.requests) == ["config.json", "model.safetensors", "tokenizer.json"]
    snapshot = RepoPaths(cache(), REPO).snapshot(hub.commit(REPO))
    assert (snapshot / "model.safetensors").read_bytes() == (repo_dir / "model.safetensors").read_bytes()


@pytest.mark.parametrize("target", ["file://", "ftp://example.invalid"])
def test_a_redirect_to_a_non_http_location_is_refused(capsys, hub, target):
    hub.add_fault(RedirectTo(target), path="*/model.safetensors", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "redirected to an unsupported location" in line


def test_a_redirect_loop_ends(capsys, hub):
    hub.add_fault(RedirectTo(hub.url), path="*/model.safetensors", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert "more than 5 redirects" in line


# -- connections that break ----------------------------------------------------------------------

def test_a_connection_reset_mid_body_is_resumed(capsys, hub, repo_dir):
    hub.add_fault(ResetMidBody(after_bytes=WEIGHTS // 2), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    gets = [r for r in hub.requests if r.path.endswith("/model.safetensors")]
    assert len(gets) == 2 and "range" not in gets[0].headers
    snapshot = RepoPaths(cache(), REPO).snapshot(hub.commit(REPO))
    assert (snapshot / "model.safetensors").read_bytes() == (repo_dir / "model.safetensors").read_bytes()


def test_resets_on_every_request_fail_with_the_reason(capsys, hub):
    hub.add_fault(ResetMidBody(after_bytes=0), path="*/model.safetensors", times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert line.startswith("Error: could not download model.safetensors from any endpoint")
    assert "transfer broke after 0 of" in line or "connection closed after 0 of" in line


def test_a_hangup_is_retried(capsys, hub, repo_dir):
    hub.add_fault(Hangup(), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err


def test_hangups_on_every_request_fail_with_the_reason(capsys, hub):
    hub.add_fault(Hangup(), times=None)
    line = one_line_error(cli(capsys, "pull", REPO, "--endpoint", hub.url))
    assert f"{hub.url}: connection to {hub.url.split('//')[1]} reset" in line
