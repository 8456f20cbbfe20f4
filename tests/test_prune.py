"""``modelmgr prune``: eviction policies planned over real caches built on disk, then executed."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from modelmgr.cache.scan import scan_cache
from modelmgr.project.config import load_config
from modelmgr.errors import DiskSpaceError
from modelmgr.cache.layout import RepoPaths
from modelmgr.project.lockfile import LockedFile, LockedModel, write_lock
from modelmgr.cache.locking import file_lock
from modelmgr.cache.prune import INCOMPLETE, ORPHAN, PARTIAL_STATE, plan_prune, prune_to_fit
from modelmgr.cache.recency import all_last_used, record_use

from .helpers import cli
from .test_cache import C1, C2, C3, build_repo

DAY = 86400.0
NOW = time.time()


def cache_dir() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def age(paths: RepoPaths, days: float) -> None:
    """Make every blob of a repo look last read and written ``days`` ago."""
    stamp = NOW - days * DAY
    for blob in paths.blobs.iterdir():
        os.utime(blob, (stamp, stamp))


def model(cache: Path, repo_id: str, size: int, *, days: float, used_days: float | None = None, commit: str = C1) -> RepoPaths:
    """A one-revision model of ``size`` bytes on ``main``, files ``days`` old, maybe a recorded use."""
    paths = build_repo(cache, repo_id, {commit: {"model.safetensors": repo_id.encode() + b"w" * (size - len(repo_id))}},
                       refs={"main": commit})
    age(paths, days)
    if used_days is not None:
        record_use(cache, repo_id, when=NOW - used_days * DAY)
    return paths


def plan(cache: Path, pinned=(), **policies):
    info = scan_cache([cache])
    return plan_prune(info, last_used=all_last_used(cache), pinned=pinned, now=NOW, **policies)


def ids(prune_plan) -> list[str]:
    return [e.plan.repo.repo_id for e in prune_plan.evictions]


def test_max_size_evicts_least_recently_used_first_until_the_cache_fits(tmp_path):
    cache = tmp_path / "hub"
    model(cache, "org/run-yesterday", 1000, days=90, used_days=1)  # old files, but run yesterday
    model(cache, "org/run-long-ago", 1000, days=90, used_days=50)
    model(cache, "org/never-run-old", 1000, days=40)  # no record: its file times count
    model(cache, "org/never-run-new", 1000, days=2)
    result = plan(cache, max_size=2500)
    assert ids(result) == ["org/run-long-ago", "org/never-run-old"]
    assert result.size_before == 4000 and result.size_after == 2000 and result.fits
    first, second = result.evictions
    assert first.recorded and not second.recorded
    assert "least recently used (last used 50d ago)" in first.reasons
    assert all(e.plan.whole_repo for e in result.evictions)
    # A limit the cache already fits takes nothing.
    assert plan(cache, max_size=4000).empty


def test_pinned_models_are_never_evicted_and_the_plan_says_so(tmp_path):
    cache = tmp_path / "hub"
    model(cache, "org/pinned", 1000, days=55)
    model(cache, "org/free", 1000, days=10)
    result = plan(cache, pinned={"ORG/Pinned"}, max_size=1000)
    assert ids(result) == ["org/free"]
    assert [k.line() for k in result.kept] == ["org/pinned: kept (pinned): last used 55d ago"]
    assert "org/pinned: kept (pinned): last used 55d ago" in result.describe()
    # Nothing unpinned is left to evict: the plan says it cannot fit.
    result = plan(cache, pinned={"org/pinned"}, max_size=500)
    assert not result.fits and any("stays over the limit" in line for line in result.describe())


def test_older_than_takes_models_unused_for_that_long(tmp_path):
    cache = tmp_path / "hub"
    model(cache, "org/stale", 1000, days=50, used_days=45)
    model(cache, "org/fresh", 1000, days=50, used_days=3)
    model(cache, "org/stale-pinned", 1000, days=50)
    result = plan(cache, pinned={"org/stale-pinned"}, older_than=30 * DAY)
    assert ids(result) == ["org/stale"]
    assert result.evictions[0].reasons == ("unused for 45d",)
    assert [(k.display_id, k.reason) for k in result.kept] == [("org/stale-pinned", "pinned")]


def test_a_pull_after_the_last_recorded_use_counts_as_a_use(tmp_path):
    cache = tmp_path / "hub"
    model(cache, "org/repulled", 1000, days=1, used_days=100)
    assert plan(cache, older_than=30 * DAY).empty


def test_detached_revisions_go_and_blobs_still_used_stay(tmp_path):
    cache = tmp_path / "hub"
    shared = b"{config}" * 10
    paths = build_repo(cache, "org/model", {C1: {"config.json": shared, "w.bin": b"a" * 500},
                                            C2: {"config.json": shared, "w.bin": b"b" * 700}}, refs={"main": C2})
    build_repo(cache, "org/pinned", {C3: {"w.bin": b"p" * 100}})  # detached, but pinned
    result = plan(cache, pinned={"org/pinned"}, detached=True)
    (eviction,) = result.evictions
    assert [r.commit for r in eviction.plan.revisions] == [C1] and not eviction.plan.whole_repo
    assert eviction.freed_bytes == 500
    assert [(k.display_id, k.reason) for k in result.kept] == [("org/pinned", "pinned")]
    assert result.execute() == 500
    assert not paths.snapshot(C1).exists() and (paths.snapshot(C2) / "config.json").read_bytes() == shared


def test_incomplete_downloads_with_their_state_and_old_orphans(tmp_path):
    cache = tmp_path / "hub"
    paths = model(cache, "org/model", 1000, days=5)
    etag = "e" * 64
    paths.incomplete(etag).write_bytes(b"x" * 300)
    state = paths.root / ".modelmgr" / "partial"
    state.mkdir(parents=True)
    (state / f"{etag}.json").write_text("{}")
    (state / f"{'f' * 64}.json").write_text("{}")  # state left without its partial file
    old_orphan, young_orphan = paths.blob("a" * 40), paths.blob("b" * 64)
    old_orphan.write_bytes(b"o" * 50)
    young_orphan.write_bytes(b"y" * 70)
    os.utime(old_orphan, (NOW - DAY, NOW - DAY))
    (paths.blobs / "notes.txt").write_text("not a blob")  # never deleted by prune
    os.utime(paths.blobs / "notes.txt", (NOW - DAY, NOW - DAY))

    only_partials = plan(cache, incomplete=True)
    assert {(item.kind, item.path.name) for item in only_partials.leftovers} == {
        (INCOMPLETE, f"{etag}.incomplete"), (PARTIAL_STATE, f"{'f' * 64}.json")}
    both = plan(cache, incomplete=True, orphans=True)
    assert {item.kind for item in both.leftovers} == {INCOMPLETE, PARTIAL_STATE, ORPHAN}
    assert [item.path for item in both.leftovers if item.kind == ORPHAN] == [old_orphan]
    assert any("orphan blob" in k.display_id and "a pull may be about to link them" in k.detail for k in both.kept)
    assert both.execute() == 300 + 2 + 50
    assert not paths.incomplete(etag).exists() and not (state / f"{etag}.json").exists()
    assert young_orphan.exists() and (paths.blobs / "notes.txt").exists()
    assert scan_cache([cache]).find("org/model")[0].revisions[0].nb_files == 1  # the model itself untouched


def test_a_partial_download_in_progress_is_left_alone(tmp_path):
    cache = tmp_path / "hub"
    paths = model(cache, "org/busy", 1000, days=100)
    etag = "c" * 64
    paths.incomplete(etag).write_bytes(b"x" * 10)
    config = load_config(environ={**os.environ, "HF_HUB_CACHE": str(cache)})
    from modelmgr.cache.prune import collect

    with file_lock(paths.locks / f"{etag}.lock"):  # what a running pull holds
        busy, _ = collect(config, incomplete=True, older_than=DAY)
        assert busy.empty and [(k.display_id, k.reason) for k in busy.kept] == [("org/busy", "a download is in progress")]
        # A plan made before the pull started still skips the file the pull now holds.
        stale = plan(cache, incomplete=True)
        skipped = []
        assert stale.execute(on_skip=skipped.append) == 0 and skipped
    assert paths.incomplete(etag).exists()
    idle, _ = collect(config, incomplete=True)
    assert idle.execute() == 10 and not paths.incomplete(etag).exists()


def test_cli_needs_a_policy(capsys):
    outcome = cli(capsys, "prune")
    assert outcome.code == 2
    for flag in ("--max-size", "--older-than", "--detached", "--incomplete", "--orphans"):
        assert flag in outcome.err
    assert cli(capsys, "prune", "--max-size", "lots").code == 2
    assert cli(capsys, "prune", "--older-than", "1 fortnight").code == 2


def test_cli_plans_confirms_and_reports_bytes_freed(capsys):
    cache = cache_dir()
    old = model(cache, "org/old", 2000, days=40)
    model(cache, "org/new", 1000, days=1)
    outcome = cli(capsys, "prune", "--max-size", "1500", "--dry-run")
    assert outcome.code == 0, outcome.err
    assert "org/old: the whole repo" in outcome.out and "least recently used (last used 40d ago)" in outcome.out
    assert "Dry run: would delete 1 revision in 1 repo, 2.0 kB" in outcome.out and old.root.exists()
    # Without a terminal and without -y nothing is deleted.
    outcome = cli(capsys, "prune", "--max-size", "1500")
    assert outcome.code == 2 and "Pass -y" in outcome.err and old.root.exists()
    outcome = cli(capsys, "prune", "--max-size", "1500", "-y")
    assert outcome.code == 0, outcome.err
    assert "freed 2.0 kB" in outcome.out and not old.root.exists()
    assert cli(capsys, "prune", "--max-size", "1500", "-y").out.splitlines()[-1].startswith("Nothing to prune")


def test_cli_json_and_pins_from_the_project_config_and_lockfile(capsys):
    cache = cache_dir()
    for name in ("org/in-config", "org/in-lock", "org/unpinned"):
        model(cache, name, 1000, days=100)
    Path("modelmgr.toml").write_text('[models.a]\nid = "org/in-config"\n')
    write_lock(Path("modelmgr.lock"), [LockedModel("b", "org/in-lock", "main", C1, (LockedFile("model.safetensors", 1000, "0" * 64),))])
    assert cli(capsys, "prune", "--older-than", "30d", "--json").code == 2  # --json cannot ask
    outcome = cli(capsys, "prune", "--older-than", "30d", "--json", "--dry-run")
    assert outcome.code == 0, outcome.err
    document = json.loads(outcome.out)
    assert [e["repo_id"] for e in document["evictions"]] == ["org/unpinned"]
    assert sorted((k["id"], k["reason"]) for k in document["kept"]) == [("org/in-config", "pinned"), ("org/in-lock", "pinned")]
    assert document["freed_bytes"] == 1000 and document["dry_run"] and "done" not in document
    outcome = cli(capsys, "prune", "--older-than", "30d", "--json", "-y")
    assert json.loads(outcome.out)["done"] is True
    assert sorted(r.repo_id for r in scan_cache([cache]).repos) == ["org/in-config", "org/in-lock"]


def test_cli_never_touches_read_only_cache_dirs(capsys, tmp_path):
    shared = tmp_path / "shared"
    team = model(shared, "org/team-model", 1000, days=400)
    team.incomplete("d" * 64).write_bytes(b"x")
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[cache]\ndirs = ["{shared}"]\n')
    mine = model(cache_dir(), "org/mine", 1000, days=400)
    outcome = cli(capsys, "prune", "--older-than", "1d", "--incomplete", "--detached", "--orphans", "-y")
    assert outcome.code == 0, outcome.err
    assert not mine.root.exists()
    assert team.root.exists() and team.incomplete("d" * 64).exists()
    assert "org/team-model" not in outcome.out


def test_prune_to_fit_makes_room_for_a_pull(tmp_path, monkeypatch):
    cache = cache_dir()
    model(cache, "org/a", 1000, days=30, used_days=20)
    model(cache, "org/b", 1000, days=30, used_days=10)
    model(cache, "org/pulling", 1000, days=30, used_days=50)  # the repo being pulled is kept
    assert prune_to_fit(load_config(), 5000) == 0  # no [cache] max_size: nothing happens
    monkeypatch.setenv("MODELMGR_CACHE_MAX_SIZE", "3500")
    config = load_config()
    assert prune_to_fit(config, 400) == 0  # fits already
    lines = []
    assert prune_to_fit(config, 1200, keep=["org/pulling"], notify=lines.append) == 1000
    assert sorted(r.repo_id for r in scan_cache([cache]).repos) == ["org/b", "org/pulling"]
    assert lines and "evicted org/a" in lines[0]
    # Impossible even after evicting everything unpinned: an error, and nothing deleted.
    Path("modelmgr.toml").write_text('[models.b]\nid = "org/b"\n')
    with pytest.raises(DiskSpaceError, match="Nothing was deleted"):
        prune_to_fit(load_config(), 2000, keep=["org/pulling"])
    with pytest.raises(DiskSpaceError, match="more than the whole cache limit"):
        prune_to_fit(load_config(), 10_000)
    assert sorted(r.repo_id for r in scan_cache([cache]).repos) == ["org/b", "org/pulling"]


def test_list_shows_when_each_model_was_last_used(capsys):
    cache = cache_dir()
    model(cache, "org/ran", 1000, days=10, used_days=2 / 24)
    model(cache, "org/idle", 1000, days=10)
    assert cli(capsys, "list").out.splitlines()[0].split()[-2:] == ["LAST", "USED"]
    rows = {line.split()[0]: line for line in cli(capsys, "list").out.splitlines()[1:3]}
    assert rows["org/ran"].rstrip().endswith("2h ago") and rows["org/idle"].rstrip().endswith("-")
    listed = {e["repo_id"]: e["last_used"] for e in json.loads(cli(capsys, "list", "--json").out)}
    assert listed["org/idle"] is None and listed["org/ran"].endswith("Z")
    assert cli(capsys, "list", "--sort", "used").out.splitlines()[1].startswith("org/ran")


def test_a_pull_past_the_cache_limit_evicts_the_least_recently_used_first(capsys, monkeypatch, local_hub):
    from modelmgr.testing import TINY_MODEL_ID

    cache = cache_dir()
    model(cache, "org/stale", 400_000, days=30, used_days=20)
    model(cache, "org/fresh", 400_000, days=30, used_days=1)
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    monkeypatch.setenv("MODELMGR_CACHE_MAX_SIZE", "1.2MB")  # 800 kB cached + the tiny model, 650 kB
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    assert "evicted org/stale" in outcome.err
    assert sorted(r.repo_id for r in scan_cache([cache]).repos) == sorted(["org/fresh", TINY_MODEL_ID])
