"""A snapshot file that is a link out of the cache is never served, read or written: pull links it
to its verified blob again, verify reports it, offline mode and load() do not take it."""
from __future__ import annotations

import json
import os
from pathlib import Path


from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli, hf_cache, pulled  # noqa: F401 - pulled: a fixture
from .test_cache import C1, build_repo


def link_out(paths: RepoPaths, commit: str, name: str, outside: Path, content: bytes) -> tuple[Path, str]:
    """Replace ``name`` of the snapshot by a link to ``outside`` (holding ``content``): (link, its proper target)."""
    link = paths.snapshot(commit) / name
    proper = os.readlink(link)
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(content)
    os.utime(outside, (1_000_000_000, 1_000_000_000))
    link.unlink()
    os.symlink(outside, link)
    return link, proper


def untouched(outside: Path, content: bytes) -> bool:
    """Neither read (its atime) nor written (its mtime, its bytes) since ``link_out``."""
    st = outside.stat()
    same = outside.read_bytes() == content
    os.utime(outside, (1_000_000_000, 1_000_000_000))  # our own read, undone
    return same and st.st_mtime == 1_000_000_000 and st.st_atime == 1_000_000_000


def resolve_gets(hub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_pull_relinks_a_link_out_of_the_cache_and_does_not_call_it_cached(capsys, pulled, tmp_path):
    hub, paths, commit = pulled
    outside = tmp_path / "x" / "o"
    link, proper = link_out(paths, commit, "config.json", outside, b"precious3")

    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--json")
    assert outcome.code == 0, outcome.err
    files = {f["path"]: f for f in json.loads(outcome.out)["files"]}
    assert files["config.json"]["cached"] is False  # it was not in place: linked again
    assert all(f["cached"] for path, f in files.items() if path != "config.json")
    assert os.readlink(link) == proper and link.resolve().parent == paths.blobs
    assert resolve_gets(hub) == []  # its blob was there, verified: nothing to fetch
    assert untouched(outside, b"precious3")

    link.unlink()
    os.symlink(outside, link)
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    assert "cached   config.json" not in outcome.err and "done     config.json" in outcome.err
    assert os.readlink(link) == proper and untouched(outside, b"precious3")

    # Its blob gone too: fetched again, even though the outside file holds the very bytes.
    blob = link.resolve()
    content = blob.read_bytes()
    link, proper = link_out(paths, commit, "config.json", outside, content)
    blob.unlink()
    hub.clear_requests()
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--json")
    assert outcome.code == 0, outcome.err
    assert json.loads(outcome.out)["downloaded_files"] == 1
    assert resolve_gets(hub) == [f"/{TINY_MODEL_ID}/resolve/{commit}/config.json"]
    assert os.readlink(link) == proper and blob.read_bytes() == content and not blob.samefile(outside)
    assert untouched(outside, content)


def test_verify_reports_a_link_out_of_the_cache_without_reading_it_and_repair_relinks(capsys, pulled, tmp_path):
    hub, paths, commit = pulled
    # The very bytes of the file, outside the cache: hashing them would find nothing wrong.
    content = (paths.snapshot(commit) / "config.json").read_bytes()
    outside = tmp_path / "x" / "o"
    link, proper = link_out(paths, commit, "config.json", outside, content)

    outcome = cli(capsys, "verify", "--json")
    assert outcome.code == 1, outcome.out
    report = json.loads(outcome.out)["before"]["repos_checked"][0]
    assert report["ok"] is False and report["corrupt"] == []
    assert [(m["path"], m["revision"]) for m in report["missing"]] == [("config.json", commit)]
    assert "a link out of the repo's blobs/" in report["missing"][0]["reason"]
    assert untouched(outside, content)  # not hashed: the atime would have moved... and it is not ours

    outcome = cli(capsys, "verify", "--repair")
    assert outcome.code == 0, outcome.out
    assert "repaired 1 file(s)" in outcome.out
    assert os.readlink(link) == proper and resolve_gets(hub) == []
    assert untouched(outside, content)
    assert cli(capsys, "verify").code == 0


def test_offline_and_load_do_not_take_a_link_out_of_the_cache(capsys, pulled, tmp_path, monkeypatch):
    from modelmgr.fetch.pull import ensure_snapshot, find_cached
    from modelmgr.project.config import load_config
    from modelmgr.project.refs import ModelRef

    hub, paths, commit = pulled
    outside = tmp_path / "x" / "o"
    link, proper = link_out(paths, commit, "config.json", outside, b"precious3")

    outcome = cli(capsys, "pull", "--offline", TINY_MODEL_ID)
    assert outcome.code == 1 and "not in the cache" in outcome.err
    assert find_cached(ModelRef(TINY_MODEL_ID), load_config()) is None
    assert os.readlink(link) == str(outside)  # offline: left alone, not served

    snapshot = ensure_snapshot(TINY_MODEL_ID)  # what load() and run use: online, it links it again
    assert snapshot.path == paths.snapshot(commit)
    assert os.readlink(link) == proper and (snapshot.path / "config.json").read_bytes() != b"precious3"
    assert resolve_gets(hub) == [] and untouched(outside, b"precious3")
    assert cli(capsys, "pull", "--offline", TINY_MODEL_ID).code == 0


def test_a_snapshot_without_manifest_is_not_served_through_a_link_out(capsys, tmp_path):
    from modelmgr.fetch.pull import find_cached
    from modelmgr.project.config import load_config
    from modelmgr.project.refs import ModelRef

    paths = build_repo(hf_cache(), "org/plain", {C1: {"config.json": b"{}", "model.bin": b"w" * 64}}, refs={"main": C1})
    config = load_config()
    assert find_cached(ModelRef("org/plain"), config) is not None  # written by huggingface_hub: no manifest
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"w" * 64)
    link = paths.snapshot(C1) / "model.bin"
    link.unlink()
    os.symlink(os.path.relpath(outside, link.parent), link)
    assert find_cached(ModelRef("org/plain"), config) is None
    assert cli(capsys, "pull", "--offline", "org/plain").code == 1
