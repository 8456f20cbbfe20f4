"""The cache scan and removal plans, on caches built by hand, checked against huggingface_hub's
own ``scan_cache_dir``."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import pytest

from modelmgr.cache.model import IN_BLOBS, IN_SNAPSHOT, OUTSIDE, unique_size
from modelmgr.cache.scan import scan_cache
from modelmgr.errors import ModelmgrError, NotCached
from modelmgr.cache.layout import RepoPaths
from modelmgr.cache.removal import delete_path, plan_removal, plan_removals

C1 = "1" * 40
C2 = "2" * 40
C3 = "3" * 40


def build_repo(
    cache: Path,
    repo_id: str,
    revisions: dict[str, dict[str, bytes]],
    *,
    refs: dict[str, str] | None = None,
    repo_type: str = "model",
) -> RepoPaths:
    """Write a repo the way huggingface_hub does: blobs named by etag, relative links, refs."""
    paths = RepoPaths(cache, repo_id, repo_type)
    paths.blobs.mkdir(parents=True, exist_ok=True)
    for commit, files in revisions.items():
        paths.snapshot(commit).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            etag = hashlib.sha256(content).hexdigest()
            blob = paths.blob(etag)
            if not blob.exists():
                blob.write_bytes(content)
            link = paths.snapshot(commit) / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    for name, commit in (refs or {}).items():
        paths.ref(name).parent.mkdir(parents=True, exist_ok=True)
        paths.ref(name).write_text(commit)
    return paths


def write_manifest(paths: RepoPaths, commit: str, files: dict[str, bytes]) -> Path:
    target = paths.manifest(commit)
    target.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"path": p, "size": len(c), "etag": hashlib.sha256(c).hexdigest()} for p, c in files.items()]
    target.write_text(json.dumps({"repo_id": paths.repo_id, "commit": commit, "files": entries}))
    return target


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "hub"
    folder.mkdir()
    return folder


def standard_cache(cache: Path) -> RepoPaths:
    """Two revisions sharing a blob, three refs, a nested file, a dataset, a copied file."""
    shared = b"{config}" * 10
    paths = build_repo(
        cache,
        "org/model",
        {
            C1: {"config.json": shared, "model.safetensors": b"w1" * 500, "sub/dir/tok.json": b"t" * 33},
            C2: {"config.json": shared, "model.safetensors": b"w2" * 700, "dup.json": shared},
        },
        refs={"main": C2, "v1.0": C1, "refs/pr/1": C1},
    )
    build_repo(cache, "org/data", {C3: {"train.csv": b"a,b\n" * 50}}, refs={"main": C3}, repo_type="dataset")
    # A regular file inside a snapshot (a copy, as on filesystems without links).
    (paths.snapshot(C1) / "README.md").write_bytes(b"# readme\n" * 3)
    # A link to a folder inside a snapshot: huggingface_hub's glob neither counts nor descends it.
    os.symlink("sub", paths.snapshot(C1) / "linkdir")
    return paths


def hf_revisions(cache: Path) -> dict[tuple[str, str], object]:
    report = huggingface_hub.scan_cache_dir(cache)
    assert report.warnings == []
    return {(repo.repo_id, rev.commit_hash): (repo, rev) for repo in report.repos for rev in repo.revisions}


def test_sizes_match_huggingface_hub(cache: Path) -> None:
    standard_cache(cache)
    info = scan_cache([cache])
    expected = hf_revisions(cache)
    ours = {(repo.repo_id, rev.commit): (repo, rev) for repo, rev in info.revisions}
    assert set(ours) == set(expected)
    for key, (hf_repo, hf_rev) in expected.items():
        repo, rev = ours[key]
        assert rev.size_on_disk == hf_rev.size_on_disk, key
        assert rev.nb_files == hf_rev.nb_files, key
        assert {f.path for f in rev.files} == {f.file_path.relative_to(hf_rev.snapshot_path).as_posix() for f in hf_rev.files}
        assert rev.refs == hf_rev.refs
        assert rev.last_modified == hf_rev.last_modified
        assert repo.size_on_disk == hf_repo.size_on_disk
        assert repo.nb_files == hf_repo.nb_files
        assert repo.repo_type == hf_repo.repo_type
        assert repo.last_modified == hf_repo.last_modified
    assert info.size_on_disk == huggingface_hub.scan_cache_dir(cache).size_on_disk
    assert not info.repos[0].read_only and info.repos[0].cache_dir == cache


def test_shared_blobs_are_counted_once_per_revision_and_repo(cache: Path) -> None:
    standard_cache(cache)
    repo = scan_cache([cache]).find("org/model")[0]
    by_commit = {rev.commit: rev for rev in repo.revisions}
    # config.json and dup.json point at the same blob: counted once in C2.
    assert by_commit[C2].size_on_disk == 80 + 1400
    assert by_commit[C2].nb_files == 3
    assert repo.size_on_disk == 80 + 1000 + 33 + 27 + 1400
    assert sum(rev.size_on_disk for rev in repo.revisions) > repo.size_on_disk
    where = {Path(blob.path).name: blob.where for blob in repo.blobs}
    assert where["README.md"] == IN_SNAPSHOT and list(where.values()).count(IN_BLOBS) == 4
    assert {f.path for f in by_commit[C1].files} == {"config.json", "model.safetensors", "sub/dir/tok.json", "README.md"}
    readme = next(f for f in by_commit[C1].files if f.path == "README.md")
    assert readme.etag is None
    assert by_commit[C1].label == "11111111 (refs/pr/1, v1.0)"
    assert by_commit[C2].label == "22222222 (main)"


def test_huggingface_hub_tolerates_the_modelmgr_folder(cache: Path) -> None:
    paths = build_repo(cache, "org/model", {C1: {"a.txt": b"a"}}, refs={"main": C1})
    write_manifest(paths, C1, {"a.txt": b"a"})
    report = huggingface_hub.scan_cache_dir(cache)
    assert report.warnings == []
    assert [rev.size_on_disk for repo in report.repos for rev in repo.revisions] == [1]
    info = scan_cache([cache])
    assert info.warnings == ()
    assert not info.repos[0].revisions[0].incomplete


def test_regular_file_in_a_snapshot_is_counted_and_reported(cache: Path) -> None:
    standard_cache(cache)
    info = scan_cache([cache])
    assert any("regular file" in w.message and C1 in w.path for w in info.warnings)


def test_bad_entries_become_warnings(cache: Path, tmp_path: Path) -> None:
    good = build_repo(cache, "org/good", {C1: {"a.txt": b"aaaa"}}, refs={"main": C1})
    broken = build_repo(cache, "org/broken", {C1: {"a.txt": b"a", "b.txt": b"bb"}}, refs={"main": C1, "gone": C2})
    os.unlink(broken.blob(hashlib.sha256(b"bb").hexdigest()))  # b.txt now dangles
    (broken.snapshots / "not-a-folder").write_text("x")  # a file where a snapshot folder belongs
    (cache / "not-a-repo").mkdir()
    (cache / "models--org--file").write_text("x")
    (cache / "models--org--nosnap").mkdir()
    (cache / ".locks").mkdir()
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    (cache / "kernels--org--k").mkdir()
    locked = build_repo(cache, "org/locked", {C1: {"a.txt": b"a"}})
    os.chmod(locked.root, 0)
    try:
        info = scan_cache([cache])
    finally:
        os.chmod(locked.root, 0o755)
    text = "\n".join(w.message for w in info.warnings)
    assert "broken link" in text and "b.txt" in text
    assert "not-a-folder" in text
    assert "'gone'" in text and "no snapshot" in text
    assert "not-a-repo" in text
    assert "models--org--file" in text
    assert "models--org--nosnap has no snapshots/" in text
    assert "CACHEDIR.TAG" not in text and ".locks" not in text and "kernels" not in text
    if os.geteuid() != 0:  # root reads everything
        assert "models--org--locked" in text
    ids = {repo.repo_id for repo in info.repos}
    assert {"org/good", "org/broken"} <= ids
    repo = info.find("org/broken")[0]
    (rev,) = repo.revisions
    assert rev.size_on_disk == 1 and rev.missing == ("b.txt",) and rev.incomplete
    assert info.find("org/good")[0].revisions[0].size_on_disk == 4
    assert good.root.exists()


def test_unreadable_cache_and_missing_extra_dir(tmp_path: Path) -> None:
    file_cache = tmp_path / "file"
    file_cache.write_text("x")
    info = scan_cache([tmp_path / "absent", file_cache, tmp_path / "also-absent"])
    assert info.repos == ()
    assert len(info.warnings) == 2  # the writable cache may simply not exist yet
    assert "is a file" in info.warnings[0].message and "does not exist" in info.warnings[1].message


def test_incomplete_revision_from_manifest(cache: Path) -> None:
    paths = build_repo(cache, "org/m", {C1: {"a.txt": b"a", "b.txt": b"b"}, C2: {"a.txt": b"a"}}, refs={"main": C1})
    write_manifest(paths, C1, {"a.txt": b"a", "b.txt": b"b", "big.bin": b"x" * 10, "sub/c.txt": b"c"})
    write_manifest(paths, C2, {"a.txt": b"a"})
    write_manifest(paths, C3, {"only.txt": b"o"})  # a pull that never linked anything
    (paths.blobs / ("f" * 64 + ".incomplete")).write_bytes(b"p" * 7)
    info = scan_cache([cache])
    repo = info.repos[0]
    revs = {rev.commit: rev for rev in repo.revisions}
    assert revs[C1].incomplete and revs[C1].missing == ("big.bin", "sub/c.txt")
    assert not revs[C2].incomplete and revs[C2].missing == ()
    assert revs[C3].incomplete and revs[C3].files == () and revs[C3].size_on_disk == 0
    # Partial downloads are exposed but never counted.
    assert [(Path(p).name, size) for p, size in repo.incomplete_blobs] == [("f" * 64 + ".incomplete", 7)]
    assert repo.size_on_disk == 2 and info.size_on_disk == 2
    assert info.warnings == ()


def test_a_broken_manifest_is_a_warning(cache: Path) -> None:
    paths = build_repo(cache, "org/m", {C1: {"a.txt": b"a"}})
    target = paths.manifest(C1)
    target.parent.mkdir(parents=True)
    target.write_text("{not json")
    (target.parent / f"{C1}.json.123.tmp").write_text("half")  # a manifest being written: ignored
    info = scan_cache([cache])
    assert len(info.warnings) == 1 and "not valid" in info.warnings[0].message
    assert not info.repos[0].revisions[0].incomplete


def test_several_cache_dirs(tmp_path: Path) -> None:
    first, second = tmp_path / "mine", tmp_path / "team"
    build_repo(first, "org/a", {C1: {"w": b"1" * 100}})
    build_repo(second, "org/a", {C1: {"w": b"1" * 100}})
    other = build_repo(second, "org/b", {C2: {"w": b"2" * 50}})
    # The same content hard-linked into a second repo counts once in the total.
    linked = build_repo(second, "org/c", {C3: {}})
    os.link(other.blob(hashlib.sha256(b"2" * 50).hexdigest()), linked.blobs / "same")
    os.symlink("../../blobs/same", linked.snapshot(C3) / "w")
    info = scan_cache([first, second])
    assert [(r.repo_id, r.read_only, r.cache_dir) for r in info.repos] == [
        ("org/a", False, first), ("org/a", True, second), ("org/b", True, second), ("org/c", True, second)
    ]
    assert [r.cache_dir for r in info.find("ORG/A")] == [first, second]
    assert info.size_on_disk == 100 + 100 + 50
    assert unique_size(info.repos[2:]) == 50


def test_huggingface_hub_shared_blob_store(cache: Path) -> None:
    """huggingface_hub 2.4 may keep content in {cache}/blobs and link repo blobs to it."""
    store = cache / "blobs"
    (store / "ab").mkdir(parents=True)
    (store / ".huggingface-shared-blobs").write_text("1\n")
    payload = store / "ab" / ("ab" * 32)
    payload.write_bytes(b"s" * 300)
    for repo_id in ("org/one", "org/two"):
        paths = build_repo(cache, repo_id, {C1: {}}, refs={"main": C1})
        os.symlink(os.path.relpath(payload, paths.blobs), paths.blob("etag1"))
        os.symlink("../../blobs/etag1", paths.snapshot(C1) / "w.safetensors")
    info = scan_cache([cache])
    expected = hf_revisions(cache)
    assert info.warnings == ()
    for repo, rev in info.revisions:
        assert rev.size_on_disk == expected[(repo.repo_id, rev.commit)][1].size_on_disk == 300
    assert info.size_on_disk == 300 == huggingface_hub.scan_cache_dir(cache).size_on_disk
    plan = plan_removal(info, "org/one", revision=None)
    assert plan.freed_bytes == 0 and any("shared blob store" in note for note in plan.notes)
    plan.execute()
    assert payload.read_bytes() == b"s" * 300
    assert [r.repo_id for r in scan_cache([cache]).repos] == ["org/two"]


# --- removal ------------------------------------------------------------------------------------


def test_remove_revision_by_commit_prefix_keeps_shared_blobs(cache: Path) -> None:
    paths = standard_cache(cache)
    (paths.root / ".no_exist" / C1).mkdir(parents=True)
    (paths.root / ".no_exist" / C1 / "tokenizer.model").write_text("")
    manifest = write_manifest(paths, C1, {"config.json": b"{config}" * 10})
    info = scan_cache([cache])
    plan = plan_removal(info, "org/model", revision=C1[:7])
    assert not plan.whole_repo and [r.commit for r in plan.revisions] == [C1]
    assert plan.freed_bytes == 1000 + 33 + 27  # weights, tok.json, the copied README; config.json stays
    assert plan.kept_blobs == 1
    assert {p.name for p in plan.refs} == {"v1.0", "1"}
    assert plan.manifests == (manifest,)
    assert plan.describe()[0].startswith("org/model: revision(s) 11111111 (refs/pr/1, v1.0), frees")
    freed = plan.execute()
    assert freed == plan.freed_bytes
    assert not paths.snapshot(C1).exists() and not manifest.exists()
    assert not (paths.root / ".no_exist" / C1).exists()
    assert not paths.ref("v1.0").exists() and not (paths.refs / "refs").exists()  # emptied refs/pr/ pruned
    assert paths.ref("main").read_text() == C2
    after = hf_revisions(cache)
    assert set(after) == {("org/model", C2), ("org/data", C3)}
    assert after[("org/model", C2)][1].size_on_disk == 80 + 1400
    assert plan.execute() == plan.freed_bytes  # a second run finds nothing left and does no harm


def test_remove_by_ref_takes_every_ref_of_that_revision(cache: Path) -> None:
    standard_cache(cache)
    plan = plan_removal(scan_cache([cache]), "org/model", revision="refs/pr/1")
    assert [r.commit for r in plan.revisions] == [C1]
    assert {p.relative_to(p.parents[1]).as_posix() if p.parent.name == "pr" else p.name for p in plan.refs} == {"v1.0", "pr/1"}


def test_remove_whole_repo_with_locks(cache: Path) -> None:
    paths = standard_cache(cache)
    paths.locks.mkdir(parents=True)
    (paths.locks / "abc.lock").write_text("")
    (paths.blobs / ("e" * 64 + ".incomplete")).write_bytes(b"i" * 5)
    info = scan_cache([cache])
    plan = plan_removal(info, "org/model", revision=None)
    assert plan.whole_repo and plan.repo_folder == paths.root and plan.lock_folder == paths.locks
    assert plan.freed_bytes == info.find("org/model")[0].size_on_disk + 5
    plan.execute()
    assert not paths.root.exists() and not paths.locks.exists()
    assert (cache / ".locks").exists()
    assert set(hf_revisions(cache)) == {("org/data", C3)}


def test_removing_every_revision_removes_the_repo(cache: Path) -> None:
    standard_cache(cache)
    info = scan_cache([cache])
    (plan,) = plan_removals(info, [("org/model", C1, "model"), ("org/model", "main", "model")])
    assert plan.whole_repo
    (plan,) = plan_removals(info, [("org/model", C1, "model"), ("org/model", None, "model")])
    assert plan.whole_repo and len(plan.revisions) == 2


def test_merged_requests_free_blobs_only_the_removed_revisions_share(cache: Path) -> None:
    build_repo(cache, "org/m", {C1: {"a": b"shared" * 10}, C2: {"a": b"shared" * 10}, C3: {"b": b"keep"}})
    info = scan_cache([cache])
    (plan,) = plan_removals(info, [("org/m", C1, "model"), ("org/m", C2, "model")])
    assert not plan.whole_repo and plan.freed_bytes == 60 and len(plan.blobs) == 1


def test_unknown_repo_and_revision(cache: Path) -> None:
    standard_cache(cache)
    info = scan_cache([cache])
    with pytest.raises(NotCached, match="modelmgr list") as excinfo:
        plan_removal(info, "org/modle", revision=None)
    assert "Did you mean 'org/model'" in str(excinfo.value)
    with pytest.raises(NotCached, match=r"Cached revisions: .*11111111 \(refs/pr/1, v1.0\).*22222222 \(main\)"):
        plan_removal(info, "org/model", revision="v9")
    with pytest.raises(NotCached, match="at least 7 hex"):
        plan_removal(info, "org/model", revision="111111")
    with pytest.raises(NotCached):
        plan_removal(info, "org/data", revision=None)  # a dataset, asked for as a model
    assert plan_removal(info, "org/data", revision=None, repo_type="dataset").whole_repo


def test_ambiguous_prefix(cache: Path) -> None:
    build_repo(cache, "org/m", {"abcdef1" + "0" * 33: {"a": b"a"}, "abcdef1" + "f" * 33: {"b": b"b"}})
    with pytest.raises(NotCached, match="ambiguous"):
        plan_removal(scan_cache([cache]), "org/m", revision="abcdef1")


def test_read_only_cache_cannot_be_removed_from(tmp_path: Path) -> None:
    mine, team = tmp_path / "mine", tmp_path / "team"
    mine.mkdir()
    build_repo(team, "org/a", {C1: {"w": b"w"}})
    with pytest.raises(ModelmgrError, match="read-only cache"):
        plan_removal(scan_cache([mine, team]), "org/a", revision=None)
    build_repo(mine, "org/a", {C1: {"w": b"w"}})
    plan = plan_removal(scan_cache([mine, team]), "org/a", revision=None)
    assert plan.repo.cache_dir == mine and any("read-only cache" in note for note in plan.notes)
    plan.execute()
    assert (team / "models--org--a").exists()


def test_links_pointing_outside_the_cache_are_never_followed(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    precious = outside / "precious.bin"
    precious.write_bytes(b"p" * 64)
    (outside / "folder" / "keep.txt").write_text("keep")
    paths = build_repo(cache, "org/m", {C1: {"a": b"a"}, C2: {"a": b"a"}}, refs={"main": C2})
    os.symlink(precious, paths.snapshot(C1) / "abs-link.bin")  # a snapshot link to a file outside
    os.symlink(outside / "folder", paths.snapshot(C1) / "dir-link")  # ...and to a folder outside
    os.symlink(precious, paths.blob("evil"))  # a blob that is itself a link outside
    os.symlink("../../blobs/evil", paths.snapshot(C1) / "evil.bin")
    info = scan_cache([cache])
    rev = {r.commit: r for r in info.find("org/m")[0].revisions}[C1]
    assert rev.size_on_disk == hf_revisions(cache)[("org/m", C1)][1].size_on_disk == 1 + 64 + 64
    assert {b.where for b in info.find("org/m")[0].blobs} == {IN_BLOBS, OUTSIDE}

    plan = plan_removal(info, "org/m", revision=C1)
    assert Path(str(precious)) not in plan.blobs and any("link outside" in note for note in plan.notes)
    assert plan.freed_bytes == 0  # the only blob unique to C1 is a link; its target is not ours
    plan.execute()
    assert precious.read_bytes() == b"p" * 64 and (outside / "folder" / "keep.txt").exists()
    assert not os.path.lexists(paths.blob("evil"))  # the link itself went

    # The whole repo, with the outside links still in the remaining revision.
    os.symlink(precious, paths.snapshot(C2) / "abs-link.bin")
    os.symlink(outside / "folder", paths.snapshot(C2) / "dir-link")
    os.symlink(precious, paths.blob("evil2"))
    os.symlink("../../blobs/evil2", paths.snapshot(C2) / "evil.bin")
    plan_removal(scan_cache([cache]), "org/m", revision=None).execute()
    assert not paths.root.exists()
    assert precious.read_bytes() == b"p" * 64 and (outside / "folder" / "keep.txt").exists()


def test_a_repo_folder_that_is_a_link_is_unlinked_not_emptied(cache: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "disk2"
    build_repo(elsewhere, "org/m", {C1: {"a": b"a"}})
    os.symlink(elsewhere / "models--org--m", cache / "models--org--m")
    plan = plan_removal(scan_cache([cache]), "org/m", revision=None)
    assert any("is a link" in note for note in plan.notes)
    plan.execute()
    assert not os.path.lexists(cache / "models--org--m")
    assert (elsewhere / "models--org--m" / "snapshots" / C1 / "a").read_bytes() == b"a"


def test_delete_refuses_paths_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("v")
    with pytest.raises(ModelmgrError, match="refusing"):
        delete_path(root / ".." / "victim.txt", within=str(root))
    os.symlink(tmp_path, root / "up")
    with pytest.raises(ModelmgrError, match="refusing"):
        delete_path(root / "up" / "victim.txt", within=str(root))
    assert victim.exists()


def test_plan_does_nothing_until_executed(cache: Path) -> None:
    standard_cache(cache)
    before = sorted(str(p) for p in cache.rglob("*"))
    info = scan_cache([cache])
    plan_removal(info, "org/model", revision=None).describe()
    plan_removal(info, "org/model", revision="main").to_dict()
    assert sorted(str(p) for p in cache.rglob("*")) == before


# --- the scan index -------------------------------------------------------------------------------


def summary(info) -> list[tuple]:
    return [
        (repo.display_id, repo.size_on_disk, repo.nb_files, str(repo.path),
         [(r.commit, sorted(r.refs), r.size_on_disk, r.nb_files, r.incomplete, r.missing, r.last_modified) for r in repo.revisions])
        for repo in info.repos
    ] + [info.size_on_disk, sorted(w.message for w in info.warnings)]


@pytest.fixture
def indexing(monkeypatch: pytest.MonkeyPatch):
    """Index repos however recent their folders are, and tell which repos the index served."""
    import modelmgr.cache.scan as cache_module
    import modelmgr.cache.scan_index

    monkeypatch.setattr(modelmgr.cache.scan_index, "RACY_SECONDS", 0.0)
    rescanned: list[str] = []
    real = cache_module._scan_repo

    def spy(repo_path, *args, **kwargs):
        rescanned.append(os.path.basename(repo_path))
        return real(repo_path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "_scan_repo", spy)
    return rescanned


def settle() -> None:
    """Let the filesystem clock tick, so a change after a scan gets a newer timestamp."""
    import time

    time.sleep(0.03)


def test_scan_index_serves_unchanged_repos(cache: Path, indexing: list[str]) -> None:
    build_repo(cache, "org/a", {C1: {"w": b"a" * 10, "sub/x": b"x"}, C2: {"w": b"b" * 20}}, refs={"main": C2, "v1": C1})
    build_repo(cache, "org/b", {C3: {"w": b"c" * 30}}, refs={"main": C3})
    fresh = scan_cache([cache])
    indexing.clear()
    first = scan_cache([cache], reuse=True)
    assert indexing == ["models--org--a", "models--org--b"]
    indexing.clear()
    again = scan_cache([cache], reuse=True)
    assert indexing == []  # both served from the index
    assert summary(fresh) == summary(first) == summary(again)
    # What the index does not keep is read from disk when asked for.
    repo = again.find("org/a")[0]
    assert {f.path for r in repo.revisions for f in r.files} == {"w", "sub/x"}
    assert {b.where for b in repo.blobs} == {IN_BLOBS}
    plan = plan_removal(again, "org/a", revision="v1")
    assert plan.freed_bytes == 11
    plan.execute()
    assert summary(scan_cache([cache], reuse=True)) == summary(scan_cache([cache]))


@pytest.mark.parametrize(
    "change",
    ["new tag", "ref moved", "file added", "nested file added", "blob deleted", "manifest added", "snapshot added", "repo removed"],
)
def test_scan_index_notices_changes(cache: Path, indexing: list[str], change: str) -> None:
    paths = build_repo(cache, "org/a", {C1: {"w": b"a" * 10, "sub/x": b"x"}, C2: {"w": b"b" * 20}}, refs={"main": C2})
    build_repo(cache, "org/b", {C3: {"w": b"c" * 30}}, refs={"main": C3})
    scan_cache([cache], reuse=True)
    settle()
    if change == "new tag":
        paths.ref("v1").write_text(C1)
    elif change == "ref moved":
        paths.ref("main").write_text(C1 + "\n")
    elif change == "file added":
        os.symlink("../../blobs/" + hashlib.sha256(b"x").hexdigest(), paths.snapshot(C2) / "extra")
    elif change == "nested file added":
        os.symlink("../../../blobs/" + hashlib.sha256(b"x").hexdigest(), paths.snapshot(C1) / "sub" / "extra")
    elif change == "blob deleted":
        os.unlink(paths.blob(hashlib.sha256(b"b" * 20).hexdigest()))
    elif change == "manifest added":
        write_manifest(paths, C2, {"w": b"b" * 20, "more": b"m"})
    elif change == "snapshot added":
        build_repo(cache, "org/a", {C3: {"w": b"c" * 30}})
    elif change == "repo removed":
        plan_removal(scan_cache([cache]), "org/a", revision=None).execute()
    indexing.clear()
    reused = scan_cache([cache], reuse=True)
    assert "models--org--b" not in indexing  # the untouched repo still came from the index
    assert summary(reused) == summary(scan_cache([cache]))


def test_scan_index_skips_what_it_cannot_watch(cache: Path, indexing: list[str], tmp_path: Path) -> None:
    standard_cache(cache)  # org/model has a regular file copied into a snapshot
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"o" * 5)
    linked = build_repo(cache, "org/linked", {C1: {}})
    os.symlink(outside, linked.snapshot(C1) / "outside.bin")
    scan_cache([cache], reuse=True)
    indexing.clear()
    scan_cache([cache], reuse=True)
    assert indexing == ["models--org--linked", "models--org--model"]  # org/data came from the index


def test_scan_index_waits_for_folders_to_settle(cache: Path) -> None:
    build_repo(cache, "org/a", {C1: {"w": b"w"}})
    scan_cache([cache], reuse=True)  # everything was written just now: nothing is indexed
    index_dir = Path(os.environ["XDG_CACHE_HOME"]) / "modelmgr" / "scan-index"
    assert not index_dir.exists() or all(os.path.getsize(p) < 200 for p in index_dir.iterdir())


def test_scan_index_off_and_corrupt(cache: Path, indexing: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    build_repo(cache, "org/a", {C1: {"w": b"w"}})
    index_dir = Path(os.environ["XDG_CACHE_HOME"]) / "modelmgr" / "scan-index"
    monkeypatch.setenv("MODELMGR_SCAN_INDEX", "0")
    scan_cache([cache], reuse=True)
    assert not index_dir.exists()
    monkeypatch.delenv("MODELMGR_SCAN_INDEX")
    scan_cache([cache], reuse=True)
    (index_file,) = index_dir.iterdir()
    index_file.write_bytes(b"garbage")
    indexing.clear()
    info = scan_cache([cache], reuse=True)
    assert indexing == ["models--org--a"] and info.warnings == ()
    indexing.clear()
    scan_cache([cache], reuse=True)
    assert indexing == []  # rewritten


def test_scan_index_keeps_each_revisions_weight_format(cache: Path, indexing: list[str]) -> None:
    # `list` names the format and the GGUF quantizations of every revision; it used to list every
    # snapshot folder again for that, which cost a warm list of 1000 repos a third of its time.
    build_repo(cache, "org/gguf", {C1: {"m-Q4_0.gguf": b"q4", "m-Q8_0.gguf": b"q8", "README.md": b"r"}}, refs={"main": C1})
    build_repo(cache, "org/st", {C2: {"model.safetensors": b"s", "model.gguf": b"g", "sub/x.bin": b"b"}}, refs={"main": C2})
    build_repo(cache, "org/pt", {C3: {"pytorch_model.bin": b"p"}}, refs={"main": C3})
    scan_cache([cache], reuse=True)
    indexing.clear()
    again = scan_cache([cache], reuse=True)
    assert indexing == []  # served from the index
    formats = {repo.repo_id: (r.weight_format, r.gguf_files) for repo in again.repos for r in repo.revisions}
    assert formats == {
        "org/gguf": ("gguf", ("m-Q4_0.gguf", "m-Q8_0.gguf")),
        "org/st": ("safetensors", ()),  # safetensors win: a repo with both loads those
        "org/pt": ("pickle", ()),
    }
    assert formats == {repo.repo_id: (r.weight_format, r.gguf_files) for repo in scan_cache([cache]).repos for r in repo.revisions}
