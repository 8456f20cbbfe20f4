"""``modelmgr list``, ``rm`` and ``du`` through click's CliRunner and real subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import huggingface_hub
import pytest
from click.testing import CliRunner

from modelmgr.cli import cli
from .test_cache import C1, C2, C3, build_repo, standard_cache, write_manifest


@pytest.fixture
def cache() -> Path:
    """The isolated HF_HUB_CACHE the conftest set up, with an (empty) config file."""
    Path(os.environ["MODELMGR_CONFIG"]).touch()
    return Path(os.environ["HF_HUB_CACHE"])


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def run_modelmgr(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelmgr", *args], capture_output=True, text=True, input=input, timeout=60
    )


def test_list_empty_cache(cache: Path) -> None:
    result = invoke("list")
    assert result.exit_code == 0
    assert "The cache is empty" in result.stdout and str(cache) in result.stdout and "modelmgr pull" in result.stdout
    assert json.loads(invoke("list", "--json").stdout) == []


def test_list_table(cache: Path) -> None:
    standard_cache(cache)
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "REVISION", "SIZE", "FILES", "MODIFIED"]
    rows = [line.split("  ") for line in lines[1:4]]
    assert lines[1].startswith("dataset:org/data") and "33333333 (main)" in lines[1]
    assert any("22222222 (main)" in line and "1.5 kB" in line for line in lines)
    assert any("11111111 (refs/pr/1, v1.0)" in line for line in lines)
    assert len(rows) == 3
    assert lines[-1] == "1 model, 1 dataset, 3 revisions, 2.7 kB on disk"
    assert "regular file" in result.stderr  # the copied README.md is worth a warning, not a crash


def test_list_json_matches_huggingface_hub(cache: Path) -> None:
    standard_cache(cache)
    rows = json.loads(invoke("list", "--json").stdout)
    report = huggingface_hub.scan_cache_dir(cache)
    expected = {(repo.repo_id, rev.commit_hash): rev for repo in report.repos for rev in repo.revisions}
    assert len(rows) == len(expected) == 3
    for row in rows:
        rev = expected[(row["repo_id"], row["revision"])]
        assert row["size_bytes"] == rev.size_on_disk
        assert row["files"] == rev.nb_files
        assert row["refs"] == sorted(rev.refs)
        assert row["path"] == str(rev.snapshot_path)
        assert row["last_modified"].endswith("Z") and row["last_modified"][:4].isdigit()
        assert row["incomplete"] is False and row["cache_dir"] == str(cache)
    assert {row["id"] for row in rows} == {"org/model", "dataset:org/data"}
    assert {row["repo_type"] for row in rows} == {"model", "dataset"}


def test_list_filter_and_sort(cache: Path) -> None:
    build_repo(cache, "Qwen/Small-Instruct", {C1: {"w": b"s" * 10}})
    build_repo(cache, "Qwen/Big", {C2: {"w": b"b" * 5000}})
    build_repo(cache, "meta/Other", {C3: {"w": b"o" * 100}})
    ids = lambda *args: [row["id"] for row in json.loads(invoke("list", "--json", *args).stdout)]  # noqa: E731
    assert ids() == ["meta/Other", "Qwen/Big", "Qwen/Small-Instruct"]
    assert ids("qwen") == ["Qwen/Big", "Qwen/Small-Instruct"]
    assert ids("qwen/*instruct") == ["Qwen/Small-Instruct"]
    assert ids("--sort", "size") == ["Qwen/Big", "meta/Other", "Qwen/Small-Instruct"]
    result = invoke("list", "nothing-like-this")
    assert "No cached model matches 'nothing-like-this'" in result.stdout
    filtered = invoke("list", "qwen").stdout.splitlines()[-1]
    assert filtered == "2 models, 2 revisions, 5.0 kB on disk"


def test_list_marks_incomplete_revisions(cache: Path) -> None:
    paths = build_repo(cache, "org/m", {C1: {"a": b"a"}}, refs={"main": C1})
    write_manifest(paths, C1, {"a": b"a", "b": b"b", "c": b"c"})
    result = invoke("list")
    assert "STATUS" in result.stdout.splitlines()[0]
    assert "incomplete (2 missing)" in result.stdout
    (row,) = json.loads(invoke("list", "--json").stdout)
    assert row["incomplete"] is True and row["missing"] == ["b", "c"]


def test_list_warns_on_stderr_and_never_crashes(cache: Path) -> None:
    paths = build_repo(cache, "org/m", {C1: {"a": b"a", "b": b"b"}}, refs={"main": C1, "x": C2})
    os.unlink(paths.snapshot(C1) / "a")
    os.symlink("../../blobs/nothing", paths.snapshot(C1) / "a")
    (cache / "stray-folder").mkdir()
    result = invoke("list")
    assert result.exit_code == 0
    assert "org/m" in result.stdout and "Warning" not in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 3 and any("stray-folder" in w for w in warnings)


def test_list_through_the_scan_index(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelmgr.cache.scan_index

    monkeypatch.setattr(modelmgr.cache.scan_index, "RACY_SECONDS", 0.0)
    build_repo(cache, "org/m", {C1: {"a": b"a" * 5}, C2: {"a": b"a" * 5, "b": b"b"}}, refs={"main": C2})
    first = invoke("list", "--json").stdout
    time.sleep(0.03)  # let the filesystem clock tick past the indexed timestamps
    index_dir = Path(os.environ["XDG_CACHE_HOME"]) / "modelmgr" / "scan-index"
    assert len(list(index_dir.iterdir())) == 1
    assert invoke("list", "--json").stdout == first
    assert invoke("rm", "org/m@main", "-y").exit_code == 0
    (row,) = json.loads(invoke("list", "--json").stdout)
    assert row["revision"] == C1


def test_list_several_cache_dirs(cache: Path, tmp_path: Path) -> None:
    team = tmp_path / "team"
    build_repo(team, "org/shared", {C1: {"w": b"w"}})
    build_repo(cache, "org/mine", {C2: {"w": b"m"}})
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[cache]\ndirs = ["{team}"]\n')
    rows = json.loads(invoke("list", "--json").stdout)
    assert [(r["id"], r["read_only"], r["cache_dir"]) for r in rows] == [
        ("org/mine", False, str(cache)), ("org/shared", True, str(team))
    ]
    assert "read-only" in invoke("list").stdout


def test_rm_dry_run_changes_nothing(cache: Path) -> None:
    standard_cache(cache)
    before = sorted(str(p) for p in cache.rglob("*"))
    result = invoke("rm", "org/model@v1.0", "--dry-run")
    assert result.exit_code == 0
    assert "11111111" in result.stdout and "Nothing was deleted" in result.stdout
    document = json.loads(invoke("rm", "org/model", "--dry-run", "--json").stdout)
    assert document["dry_run"] is True and document["removals"][0]["whole_repo"] is True
    assert document["freed_bytes"] == document["removals"][0]["freed_bytes"] > 0
    assert sorted(str(p) for p in cache.rglob("*")) == before


def test_rm_revision_with_yes(cache: Path) -> None:
    paths = standard_cache(cache)
    result = invoke("rm", "org/model@1111111", "-y")
    assert result.exit_code == 0, result.output
    assert "Deleted 1 revision, freed 1.1 kB." in result.stdout
    assert not paths.snapshot(C1).exists() and paths.snapshot(C2).exists()
    report = huggingface_hub.scan_cache_dir(cache)
    assert report.warnings == [] and {rev.commit_hash for repo in report.repos for rev in repo.revisions} == {C2, C3}


def test_rm_several_refs_confirmed_once(cache: Path) -> None:
    standard_cache(cache)
    build_repo(cache, "org/other", {C1: {"x": b"x"}})
    result = invoke("rm", "org/model", "dataset:org/data", "org/other@1111111", "-y")
    assert result.exit_code == 0, result.output
    assert "Deleted 4 revisions" in result.stdout
    assert huggingface_hub.scan_cache_dir(cache).repos == frozenset()


def test_rm_asks_and_respects_no(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standard_cache(cache)
    # CliRunner's stdin is no terminal; make confirm() believe it is one, so it asks.
    terminal = type("Terminal", (), {"isatty": staticmethod(lambda: True)})
    monkeypatch.setattr("modelmgr.commands._common.sys", type("Sys", (), {"stdin": terminal}))
    result = CliRunner().invoke(cli, ["rm", "org/model"], input="n\n")
    assert "Delete 2 revisions in 1 repo, 2.5 kB? [y/N]" in result.output and result.exit_code == 1
    assert (cache / "models--org--model").exists()
    result = CliRunner().invoke(cli, ["rm", "org/model"], input="y\n")
    assert result.exit_code == 0 and "freed 2.5 kB" in result.stdout
    assert not (cache / "models--org--model").exists()


def test_rm_through_an_alias(cache: Path) -> None:
    standard_cache(cache)
    Path(os.environ["MODELMGR_CONFIG"]).write_text('[models.mine]\nid = "org/model"\n')
    result = invoke("rm", "mine@main", "-y")
    assert result.exit_code == 0, result.output
    assert not (cache / "models--org--model" / "snapshots" / C2).exists()


def test_rm_without_yes_and_without_a_terminal_exits_2(cache: Path) -> None:
    standard_cache(cache)
    result = run_modelmgr("rm", "org/model")
    assert result.returncode == 2
    assert "Pass -y" in result.stderr
    result = run_modelmgr("rm", "org/model", "--json")
    assert result.returncode == 2 and "-y" in result.stderr
    assert (cache / "models--org--model").exists()


def test_rm_errors_are_one_line_with_exit_1(cache: Path) -> None:
    standard_cache(cache)
    result = run_modelmgr("rm", "org/nothing")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: org/nothing is not in the cache") and "modelmgr list" in result.stderr
    result = run_modelmgr("rm", "org/model@nope")
    assert result.returncode == 1 and "Cached revisions: 11111111 (refs/pr/1, v1.0), 22222222 (main)" in result.stderr


def test_rm_json_with_yes(cache: Path) -> None:
    standard_cache(cache)
    result = run_modelmgr("rm", "org/model@main", "--json", "-y")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["dry_run"] is False and document["done"] is True
    assert document["removals"][0]["revisions"] == [{"revision": C2, "refs": ["main"]}]
    assert not (cache / "models--org--model" / "snapshots" / C2).exists()


def test_du(cache: Path) -> None:
    standard_cache(cache)
    result = invoke("du")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].startswith("org/model") and "Total: 2.7 kB in 2 repos" in result.stdout
    assert f"Cache {cache} (writable)" in result.stdout and "free of" in result.stdout
    document = json.loads(invoke("du", "--json").stdout)
    report = huggingface_hub.scan_cache_dir(cache)
    sizes = {repo.repo_id: repo.size_on_disk for repo in report.repos}
    assert {r["repo_id"]: r["size_bytes"] for r in document["repos"]} == sizes
    assert document["total_bytes"] == report.size_on_disk
    assert document["cache_dirs"][0]["free_bytes"] > 0
    assert [r["id"] for r in json.loads(invoke("du", "data", "--json").stdout)["repos"]] == ["dataset:org/data"]
    (cache / "models--org--model" / "blobs" / ("f" * 64 + ".incomplete")).write_bytes(b"p" * 1500)
    assert "Partial downloads: 1.5 kB" in invoke("du").stdout


def test_du_empty_cache_not_created_yet(cache: Path) -> None:
    result = invoke("du")
    assert result.exit_code == 0 and "The cache is empty" in result.stdout and "not created yet" in result.stdout


def test_list_imports_nothing_heavy(cache: Path) -> None:
    standard_cache(cache)
    code = textwrap.dedent(
        """
        import sys
        from modelmgr.cli import main
        try:
            main(["list"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = [m for m in ("torch", "transformers", "huggingface_hub", "pluggy", "numpy", "safetensors") if m in sys.modules]
        assert not heavy, heavy
        print("LIGHT")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "org/model" in result.stdout and result.stdout.strip().endswith("LIGHT")


def test_installed_console_script(cache: Path) -> None:
    script = Path(sys.executable).with_name("modelmgr")
    if not script.exists():
        pytest.skip("the modelmgr console script is not installed next to this Python")
    standard_cache(cache)
    result = subprocess.run([str(script), "list", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and len(json.loads(result.stdout)) == 3


def test_a_real_huggingface_hub_download_lists_and_removes_cleanly(cache: Path, local_hub) -> None:
    from modelmgr.testing import TINY_MODEL_ID

    folder = huggingface_hub.snapshot_download(TINY_MODEL_ID, endpoint=local_hub.url, cache_dir=cache)
    report = huggingface_hub.scan_cache_dir(cache)
    (repo,) = report.repos
    (rev,) = repo.revisions
    result = run_modelmgr("list", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (row,) = json.loads(result.stdout)
    assert row["id"] == TINY_MODEL_ID and row["path"] == folder
    assert (row["revision"], row["size_bytes"], row["files"], row["refs"]) == (
        rev.commit_hash, rev.size_on_disk, rev.nb_files, sorted(rev.refs)
    )
    result = run_modelmgr("rm", TINY_MODEL_ID, "-y")
    assert result.returncode == 0, result.stderr
    after = huggingface_hub.scan_cache_dir(cache)
    assert after.repos == frozenset() and after.warnings == [] and after.size_on_disk == 0
    assert not (cache / ".locks" / repo.repo_path.name).exists()


def test_a_plan_overtaken_by_a_pull_deletes_nothing(local_hub, tmp_path, tiny_model_dir, monkeypatch):
    """rm plans, the person confirms a minute later: a pull in between must not be undone."""
    import shutil as _shutil

    from modelmgr.cache.scan import scan_cache as _scan
    from modelmgr.errors import ModelmgrError
    from modelmgr.fetch.pull import pull
    from modelmgr.cache.removal import plan_removal
    from modelmgr.testing import TINY_MODEL_ID

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    pull(TINY_MODEL_ID)
    cache_root = Path(os.environ["HF_HUB_CACHE"])
    plan = plan_removal(_scan([cache_root]), TINY_MODEL_ID, revision=None)
    assert plan.whole_repo
    newer = tmp_path / "newer"
    _shutil.copytree(tiny_model_dir, newer)
    (newer / "LICENSE").write_text("a new commit\n")
    new_commit = local_hub.add_repo(TINY_MODEL_ID, newer)
    pull(TINY_MODEL_ID)
    with pytest.raises(ModelmgrError, match="changed since the plan was made"):
        plan.execute()
    snapshot = cache_root / f"models--{TINY_MODEL_ID.replace('/', '--')}" / "snapshots" / new_commit
    assert (snapshot / "LICENSE").read_text() == "a new commit\n"
