"""A cache others can write to (issue 9): planted links, case-colliding folders, other tools' and
killed pulls' temporary files, refs and manifests that lie. Real files, and a loopback LocalHub
where a pull is needed. Each test says how it failed before the fix."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.cache.scan import scan_cache
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli, hf_cache, serve, small_repo
from .test_cache import C1, C2, build_repo

WEIGHTS = 5 * 1024 * 1024  # above download.SMALL_FILE, so a partial file is resumed, not restarted


def dead_pid() -> int:
    """A process id that certainly belongs to no running process."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_planted_links_in_blobs_and_locks_lead_nowhere_outside(capsys, monkeypatch, hub_factory, tmp_path):
    # Before: the pull took the outside file's 1 MiB as an already fetched prefix, wrote model
    # bytes into it through the .incomplete link, and created outside/lock-target through the
    # dangling lock link.
    repo = small_repo(tmp_path / "repo", weights=WEIGHTS, seed=9)
    hub = serve(hub_factory, "org/model", repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    etag = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.bin"
    victim.write_bytes(b"precious" * 131072)
    before = victim.read_bytes()
    paths = RepoPaths(hf_cache(), "org/model")
    paths.blobs.mkdir(parents=True)
    paths.locks.mkdir(parents=True)
    os.symlink(victim, paths.incomplete(etag))
    os.symlink(outside / "lock-target", paths.locks / f"{etag}.lock")

    outcome = cli(capsys, "pull", "org/model")
    assert outcome.code == 0, outcome.err
    assert victim.read_bytes() == before
    assert sorted(p.name for p in outside.iterdir()) == ["victim.bin"]
    assert hashlib.sha256(paths.blob(etag).read_bytes()).hexdigest() == etag
    lock = paths.locks / f"{etag}.lock"
    assert not lock.is_symlink() and lock.is_file()


def test_another_users_partial_file_is_not_written_into(capsys, monkeypatch, hub_factory, tmp_path):
    # Before: the pull resumed into (and wrote through) a partial file some other uid owned.
    repo = small_repo(tmp_path / "repo", weights=WEIGHTS, seed=10)
    hub = serve(hub_factory, "org/model", repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    etag = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    paths = RepoPaths(hf_cache(), "org/model")
    paths.blobs.mkdir(parents=True)
    theirs = paths.incomplete(etag)
    theirs.write_bytes(b"x" * 4096)
    os.chown(theirs, 4242, 4242)
    handle = open(theirs, "rb")  # the inode that file had: it must stay as its owner left it
    try:
        assert cli(capsys, "pull", "org/model").code == 0
        assert os.fstat(handle.fileno()).st_size == 4096 and handle.read() == b"x" * 4096
    finally:
        handle.close()
    assert hashlib.sha256(paths.blob(etag).read_bytes()).hexdigest() == etag


def test_a_fifo_in_place_of_a_lock_or_ref_does_not_hang(capsys, tmp_path):
    # Before: `prune --incomplete` opened the FIFO planted as a blob lock and blocked forever, and
    # the scan did the same with a FIFO planted as a ref.
    cache = hf_cache()
    paths = build_repo(cache, "org/model", {C1: {"w": b"w" * 10}}, refs={"main": C1})
    etag = "e" * 64
    (paths.blobs / f"{etag}.incomplete").write_bytes(b"part")
    paths.locks.mkdir(parents=True)
    os.mkfifo(paths.locks / f"{etag}.lock")
    os.mkfifo(paths.ref("v1"))
    script = textwrap.dedent(f"""
        import sys
        from modelmgr.cli import main
        sys.argv = ["modelmgr", "prune", "--incomplete", "-y"]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "v1" in done.stderr and "not a small text file" in done.stderr


def test_rm_takes_the_exact_spelling_and_refuses_an_ambiguous_one(capsys):
    # Before: with both folders present `rm -y tiny-org/tiny` deleted models--Tiny-Org--Tiny (the
    # first case-insensitive match in sorted order) and kept the one asked for.
    cache = hf_cache()
    lower = build_repo(cache, "tiny-org/tiny", {C1: {"w": b"lower"}}, refs={"main": C1})
    upper = build_repo(cache, "Tiny-Org/Tiny", {C2: {"w": b"upper"}}, refs={"main": C2})
    outcome = cli(capsys, "rm", "-y", "tiny-org/tiny")
    assert outcome.code == 0, outcome.err
    assert not lower.root.exists() and upper.root.exists()

    build_repo(cache, "tiny-org/tiny", {C1: {"w": b"lower"}}, refs={"main": C1})
    outcome = cli(capsys, "rm", "-y", "TINY-ORG/tiny")
    assert outcome.code == 1
    assert "ambiguous" in outcome.err and "Tiny-Org/Tiny" in outcome.err and "Traceback" not in outcome.err
    assert lower.root.exists() and upper.root.exists()


def test_prune_incomplete_spares_a_running_snapshot_download(capsys, hub_factory, tmp_path):
    # Before: `prune --incomplete -y` took huggingface_hub's `{etag}.{uuid8}.incomplete` for a
    # partial download of blob "{etag}.{uuid8}", found no lock of that name, deleted the file, and
    # the running snapshot_download failed when it came to rename it.
    repo = small_repo(tmp_path / "repo", weights=600_000, seed=11)
    hub = serve(hub_factory, "org/model", repo)
    hub.set_rate_limit(100_000)
    cache = hf_cache()
    script = textwrap.dedent(f"""
        from huggingface_hub import snapshot_download
        snapshot_download("org/model", cache_dir={str(cache)!r}, endpoint={hub.url!r})
    """)
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1"}
    download = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blobs = RepoPaths(cache, "org/model").blobs
    try:
        import time

        weights = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()

        def in_flight() -> list[Path]:  # the weights: six seconds at this rate, small files are gone at once
            return [p for p in blobs.iterdir() if p.name.startswith(weights + ".") and p.name.endswith(".incomplete")] \
                if blobs.is_dir() else []

        deadline = time.monotonic() + 30
        while not in_flight():
            assert time.monotonic() < deadline and download.poll() is None, "snapshot_download never started"
            time.sleep(0.05)
        (partial,) = in_flight()
        outcome = cli(capsys, "prune", "--incomplete", "-y")
        assert outcome.code == 0, outcome.err
        assert partial.exists()
    finally:
        hub.set_rate_limit(None)
        out, err = download.communicate(timeout=120)
    assert download.returncode == 0, err


def test_prune_incomplete_counts_and_takes_what_a_killed_commit_left(capsys):
    # Before: `{etag}.incomplete.{pid}.{tid}` was neither a partial download nor a blob to prune
    # (left forever, reported as "unexpected" by verify), and the `.{name}.{pid}.{tid}.tmp` link in
    # the snapshot was listed as one more file of the model.
    cache = hf_cache()
    paths = build_repo(cache, "org/model", {C1: {"config.json": b"{}", "w": b"w" * 10}}, refs={"main": C1})
    etag = "a" * 64
    pid = dead_pid()
    leftover = paths.blobs / f"{etag}.incomplete.{pid}.140000"
    leftover.write_bytes(b"v" * 300)
    link = paths.snapshot(C1) / f".config.json.{pid}.140000.tmp"
    os.symlink("../../blobs/" + "b" * 64, link)
    alive = paths.blobs / f"{'c' * 64}.incomplete.{os.getpid()}.1"  # our own process: still running
    alive.write_bytes(b"x")

    (repo,) = scan_cache([cache]).repos
    assert repo.revisions[0].nb_files == 2
    outcome = cli(capsys, "prune", "--incomplete", "--dry-run", "--json")
    plan = json.loads(outcome.out)
    assert {item["path"] for item in plan["leftovers"]} == {str(leftover), str(link)}
    assert plan["freed_bytes"] == 300
    assert cli(capsys, "prune", "--incomplete", "-y").code == 0
    assert not leftover.exists() and not os.path.lexists(link) and alive.exists()
    verify = cli(capsys, "verify", "org/model")
    assert "unexpected" not in verify.out.replace("0 unexpected", "")


def test_a_ref_that_names_a_path_outside_the_cache_is_broken(capsys, monkeypatch, tmp_path):
    # Before: refs/main holding "../../../../outside/model" made `pull --offline`, run and load()
    # resolve snapshots/../../../../outside/model, a folder outside the cache.
    cache = hf_cache()
    paths = build_repo(cache, "org/model", {C1: {"config.json": b"{}"}})
    outside = paths.snapshots / "../../../../outside/model"
    outside.mkdir(parents=True)
    (outside / "config.json").write_text("{}")
    paths.refs.mkdir(parents=True, exist_ok=True)
    paths.ref("main").write_text("../../../../outside/model")
    assert paths.read_ref("main") is None

    outcome = cli(capsys, "pull", "--offline", "org/model")
    assert outcome.code == 1 and "not in the cache" in outcome.err

    from modelmgr.fetch.pull import find_cached
    from modelmgr.project.config import load_config
    from modelmgr.project.refs import ModelRef

    assert find_cached(ModelRef("org/model"), load_config()) is None
    warnings = [w for w in scan_cache([cache]).warnings if "not a 40-hex commit" in str(w)]
    assert len(warnings) == 1 and getattr(warnings[0], "path", None) == str(paths.ref("main"))


def test_a_manifest_with_wrong_types_is_treated_as_absent(capsys, monkeypatch, local_hub):
    # Before: a manifest entry {"path": 5, ...} ended the pull with "unexpected TypeError" (the
    # merge with the new manifest sorted an int among the paths), on every pull of that commit.
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    commit = local_hub.commit(TINY_MODEL_ID)
    paths = RepoPaths(hf_cache(), TINY_MODEL_ID)
    paths.manifest(commit).parent.mkdir(parents=True)
    paths.manifest(commit).write_text(json.dumps({"files": [{"path": 5, "size": 1, "etag": "x"}]}))
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    assert all(isinstance(f["path"], str) for f in json.loads(paths.manifest(commit).read_text())["files"])

    paths.manifest(commit).write_text('{"files": {"path": []}}')
    listed = cli(capsys, "list")
    assert listed.code == 0 and "is not valid" in listed.err


def test_names_with_a_newline_are_refused_and_never_become_folders(capsys, monkeypatch, local_hub):
    # Before: `^...$` with re.match let "tiny-org\n" through: the pull exited 0 into a folder with
    # a newline in its name.
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    for text in ("modelmgr-test\n/tiny-llama", "modelmgr-test/tiny-llama\n@main", "modelmgr-test/tiny-llama@main\n/x"):
        outcome = cli(capsys, "pull", text)
        assert outcome.code == 1 and "invalid" in outcome.err, (text, outcome)
    assert not any("\n" in p.name for p in hf_cache().iterdir()) if hf_cache().exists() else True

    cache = hf_cache()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "models--org--na\nme").mkdir()
    info = scan_cache([cache])
    assert info.repos == () and "not a model, dataset or space folder" in str(info.warnings[0])


def test_verify_and_recency_never_follow_planted_links_or_block_on_fifos(capsys, tmp_path):
    # Before: a FIFO named like a blob hung `modelmgr verify` forever (it opened it to hash it),
    # and a last-used marker planted as a dangling link made `run`/`load` create its target.
    cache = hf_cache()
    build_repo(cache, "org/model", {C1: {"w": b"w" * 10}}, refs={"main": C1})
    fifo = RepoPaths(cache, "org/model").blobs / ("f" * 64)
    os.mkfifo(fifo)
    script = "import sys; from modelmgr.cli import main; sys.argv = ['modelmgr', 'verify']; main()"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not a regular file" in done.stdout, done.stdout + done.stderr

    from modelmgr.cache.layout import LAST_USED, MODELMGR_DIR, folder_name
    from modelmgr.cache.recency import last_used, record_use

    markers = cache / MODELMGR_DIR / LAST_USED
    markers.mkdir(parents=True)
    target = tmp_path / "outside" / "created-through-the-link"
    target.parent.mkdir()
    os.symlink(target, markers / folder_name("org/model"))
    record_use(cache, "org/model", when=1_000_000.0)
    assert not target.exists()
    assert last_used(cache, "org/model") == 1_000_000.0


def test_a_link_planted_under_a_predictable_temporary_name_is_not_written_through(tmp_path):
    # Before: write_atomic opened `.main.{pid}.{tid}.tmp` with a plain open(), so a link planted
    # under that name (pids are easy to guess) got the commit written into its target, and the
    # rename then made refs/main itself that link.
    import threading

    paths = RepoPaths(hf_cache(), "org/model")
    paths.refs.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    os.symlink(victim, paths.refs / f".main.{os.getpid()}.{threading.get_ident()}.tmp")
    paths.write_ref("main", C1)
    assert victim.read_text() == "untouched"
    assert not paths.ref("main").is_symlink() and paths.read_ref("main") == C1


def test_refs_half_written_by_a_killed_writer_are_no_refs():
    # Before: huggingface_hub's `main.{uuid8}.tmp`, left by a kill between its write and rename,
    # was listed as a ref named "main.1a2b3c4d.tmp" (and `rm org/model@main.1a2b3c4d.tmp` took it).
    cache = hf_cache()
    paths = build_repo(cache, "org/model", {C1: {"w": b"w"}}, refs={"main": C1})
    (paths.refs / "main.1a2b3c4d.tmp").write_text(C1)
    (paths.refs / f".main.{dead_pid()}.1.tmp").write_text(C1)
    (repo,) = scan_cache([cache]).repos
    assert repo.revisions[0].refs == {"main"}


def test_a_verified_blob_a_killed_pull_never_renamed_is_adopted(capsys, monkeypatch, hub_factory, tmp_path):
    # Before: `{etag}.incomplete.{pid}.{tid}` (killed between the two renames of the commit step)
    # was never looked at again: the next pull downloaded the whole file anew beside it.
    repo = small_repo(tmp_path / "repo", weights=WEIGHTS, seed=12)
    hub = serve(hub_factory, "org/model", repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert cli(capsys, "pull", "org/model").code == 0
    etag = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    paths = RepoPaths(hf_cache(), "org/model")
    os.rename(paths.blob(etag), paths.blobs / f"{etag}.incomplete.{dead_pid()}.140000")
    os.unlink(paths.snapshot(hub.commit("org/model")) / "model.safetensors")
    hub.clear_requests()
    assert cli(capsys, "pull", "org/model").code == 0
    assert not [r for r in hub.requests if r.path.endswith("/model.safetensors") and r.method == "GET"]
    assert hashlib.sha256(paths.blob(etag).read_bytes()).hexdigest() == etag
    assert not [p for p in paths.blobs.iterdir() if ".incomplete" in p.name]


def test_a_link_loop_in_refs_ends():
    # Before: the refs walk followed links to folders: `refs/loop -> .` alone gave 41 refs (main,
    # loop/main, loop/loop/main, ... until ELOOP), and a second such link 2**40 paths to walk, so
    # every scan (list, du, rm, prune, verify) hung.
    cache = hf_cache()
    paths = build_repo(cache, "org/model", {C1: {"w": b"w"}}, refs={"main": C1})
    os.symlink(".", paths.refs / "loop")
    os.symlink(".", paths.refs / "again")
    script = f"from modelmgr.cache.scan import scan_cache; print(len(scan_cache([{str(cache)!r}]).repos[0].revisions[0].refs))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stdout + done.stderr


@pytest.mark.parametrize("folder", ["blobs", "locks", "snapshots", "manifests"])
def test_a_folder_of_the_repo_planted_as_a_link_is_refused(capsys, monkeypatch, hub_factory, tmp_path, folder):
    # Before: only the last part of each path was opened without following links, so with
    # blobs/ (or .locks/models--org--model/) a link to a folder outside the cache, the pull
    # exited 0 and wrote the model's bytes (or its locks) there.
    repo = small_repo(tmp_path / "repo", weights=WEIGHTS, seed=21)
    hub = serve(hub_factory, "org/model", repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    outside = tmp_path / "outside"
    outside.mkdir()
    paths = RepoPaths(hf_cache(), "org/model")
    planted = {"blobs": paths.blobs, "locks": paths.locks, "snapshots": paths.snapshots, "manifests": paths.root / ".modelmgr"}[folder]
    planted.parent.mkdir(parents=True)
    os.symlink(outside, planted)

    outcome = cli(capsys, "pull", "org/model")
    assert outcome.code == 1
    assert "is a symbolic link inside the cache" in outcome.err and "Remove the link" in outcome.err
    assert "Traceback" not in outcome.err and len(outcome.err.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []


def test_a_blob_planted_as_a_link_is_not_taken_for_the_blob(capsys, monkeypatch, hub_factory, tmp_path):
    # Before: a link under blobs/<etag> to an outside file of the right size counted as the blob,
    # so the pull fetched nothing and the snapshot served bytes nobody verified.
    repo = small_repo(tmp_path / "repo", weights=WEIGHTS, seed=22)
    hub = serve(hub_factory, "org/model", repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    weights = (repo / "model.safetensors").read_bytes()
    etag = hashlib.sha256(weights).hexdigest()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * len(weights))
    paths = RepoPaths(hf_cache(), "org/model")
    paths.blobs.mkdir(parents=True)
    os.symlink(outside, paths.blob(etag))

    outcome = cli(capsys, "pull", "org/model")
    assert outcome.code == 0, outcome.err
    assert not paths.blob(etag).is_symlink()
    assert hashlib.sha256(paths.blob(etag).read_bytes()).hexdigest() == etag
    assert outside.read_bytes() == b"\0" * len(weights)
