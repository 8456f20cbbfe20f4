"""Resume across restarts: partial downloads stay on disk (blobs/<etag>.incomplete plus the
resume state) and the next pull continues them with Range; a server that ignores Range makes the
file start over cleanly. Also the progress output a pull prints while it works."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmgr.fetch import parts
from modelmgr.fetch.download import state_file
from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import IgnoreRange, RefuseRange, ShortBody, Status
from modelmgr.units import format_size

from .helpers import cli, run_modelmgr, hf_cache as cache, small_repo

MiB = 1024 * 1024
REPO = "org/resume"
BIG = 64 * MiB  # several ranges with the default split (parts.part_size)
MEDIUM = 8 * MiB  # one range (parts.MIN_PART), but above parts.SMALL_FILE, so it keeps resume state


def make_repo(root: Path, weights: int, seed: int = 7) -> Path:
    return small_repo(root, weights=weights, seed=seed)


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("big") / "repo", BIG)


@pytest.fixture(scope="module")
def medium_dir(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("medium") / "repo", MEDIUM)



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weight_gets(hub) -> list:
    return hub.file_answers("model.safetensors")  # from the Hub itself, or from its CDN after a 302


def requested_bytes(requests, size: int) -> int:
    """Bytes the server was asked for and agreed to send: Range spans of 206s, whole files of 200s."""
    total = 0
    for request in requests:
        if request.status == 200:
            total += size
        elif request.status == 206:
            first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
            total += (int(last) if last else size - 1) - int(first) + 1
    return total


def saved_bytes(state: Path) -> int:
    try:
        return sum(done for _, _, done in json.loads(state.read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def assert_complete(repo_dir: Path, commit: str, etag: str) -> None:
    paths = RepoPaths(cache(), REPO)
    blob = paths.blob(etag)
    assert sha256(blob) == etag and blob.stat().st_size == (repo_dir / "model.safetensors").stat().st_size
    assert (paths.snapshot(commit) / "model.safetensors").resolve() == blob
    assert not paths.incomplete(etag).exists() and not state_file(paths, etag).exists()


def interrupt_pull(capsys, hub, size: int):
    """A pull whose weights break half-way on the only endpoint: it fails, keeping the bytes."""
    half = size // 2
    hub.add_fault(ShortBody(missing_bytes=size - half), path="*/model.safetensors")
    hub.add_fault(Status(500), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 1
    assert "What was fetched is kept: run the same pull again to resume" in outcome.err
    hub.clear_faults()
    hub.clear_requests()
    return half


# -- kill -9, then resume ----------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_transfer_then_the_next_pull_fetches_only_the_rest(hub_factory, big_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, big_dir)
    etag = sha256(big_dir / "model.safetensors")
    paths = RepoPaths(cache(), REPO)
    incomplete, state = paths.incomplete(etag), state_file(paths, etag)
    hub.set_rate_limit(4_000_000)  # per connection: the 64 MiB file takes ~2 s over its 8 ranges
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    process = subprocess.Popen([sys.executable, "-m", "modelmgr", "pull", REPO], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        # Wait until real progress is on disk and recorded (a quarter of the file), then kill.
        while saved_bytes(state) < BIG // 4 or incomplete.stat().st_blocks * 512 < BIG // 4:
            assert process.poll() is None, "the pull ended before it could be killed"
            assert time.monotonic() < deadline, "no progress within 30 s"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert incomplete.exists() and not paths.blob(etag).exists()
    kept = saved_bytes(state)
    assert BIG // 4 <= kept < BIG

    # What is on disk shows in a dry run, counted as the download counts it (not the sparse size).
    hub.set_rate_limit(None)
    dry = run_modelmgr("pull", REPO, "--dry-run", env={"HF_ENDPOINT": hub.url})
    assert dry.code == 0, dry.err
    assert re.search(rf"model\.safetensors\s+{re.escape(format_size(BIG))}\s+partial {re.escape(format_size(kept))}", dry.out), dry.out
    assert re.search(rf"Would fetch \d of 3 files, {re.escape(format_size(BIG - kept))} ", dry.out), dry.out

    hub.clear_requests()
    outcome = run_modelmgr("pull", REPO, env={"HF_ENDPOINT": hub.url}, timeout=60)
    assert outcome.code == 0, outcome.err
    gets = weight_gets(hub)
    assert gets and all(r.status == 206 and r.headers["range"].startswith("bytes=") for r in gets)
    fetched = requested_bytes(gets, BIG)
    assert fetched <= BIG - kept, f"fetched {fetched} of {BIG} bytes again, {kept} were kept"
    assert any(int(r.headers["range"][6:].split("-")[0]) > 0 for r in gets)
    # The plain progress lines (stderr is a pipe here) say where the file resumed.
    assert f"fetching model.safetensors ({format_size(BIG)}, resuming at {format_size(kept)})" in outcome.err
    assert_complete(big_dir, commit, etag)


def test_a_broken_pull_keeps_its_bytes_and_the_next_one_continues_with_range(capsys, hub_factory, medium_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    paths = RepoPaths(cache(), REPO)
    half = interrupt_pull(capsys, hub, MEDIUM)
    assert paths.incomplete(etag).stat().st_size == half
    assert saved_bytes(state_file(paths, etag)) == half
    assert not paths.blob(etag).exists()
    assert not (paths.snapshot(commit) / "model.safetensors").exists()
    assert paths.read_ref("main") is None, "a ref is written only when the snapshot is complete"

    dry = cli(capsys, "pull", REPO, "--endpoint", hub.url, "--dry-run")
    assert f"partial {format_size(half)}" in dry.out
    assert f"Would fetch 1 of 3 files, {format_size(MEDIUM - half)}" in dry.out

    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    (get,) = weight_gets(hub)
    assert get.headers["range"] == f"bytes={half}-{MEDIUM - 1}" and get.status == 206
    assert_complete(medium_dir, commit, etag)


def test_a_partial_file_that_does_not_verify_is_started_over_not_blamed_on_the_server(capsys, hub_factory, medium_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    paths = RepoPaths(cache(), REPO)
    # A partial file with no resume state (another tool's, or a crash before any state was
    # written) whose bytes are wrong: resuming after it cannot verify.
    paths.blobs.mkdir(parents=True)
    paths.incomplete(etag).write_bytes(b"\xff" * (MEDIUM // 4))
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "did not verify; starting the file over" in outcome.err
    assert [r.headers.get("range") for r in weight_gets(hub)] == [f"bytes={MEDIUM // 4}-{MEDIUM - 1}", None]
    assert_complete(medium_dir, commit, etag)


def test_a_sparse_multi_range_partial_without_state_is_not_taken_for_a_prefix(capsys, hub_factory, big_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, big_dir)
    etag = sha256(big_dir / "model.safetensors")
    paths = RepoPaths(cache(), REPO)
    # What a multi-range download killed before its first state save used to leave: the second
    # range's bytes at their offset, a hole before them, and no state file.
    paths.blobs.mkdir(parents=True)
    data = (big_dir / "model.safetensors").read_bytes()
    with open(paths.incomplete(etag), "wb") as handle:
        handle.write(data[: MiB])
        handle.seek(BIG // 2)
        handle.write(data[BIG // 2: BIG // 2 + MiB])
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert_complete(big_dir, commit, etag)


def test_multi_range_downloads_record_their_layout_before_the_first_byte(capsys, monkeypatch, hub_factory, big_dir):
    from modelmgr.fetch import download
    hub = hub_factory()
    hub.add_repo(REPO, big_dir)
    etag = sha256(big_dir / "model.safetensors")
    state = state_file(RepoPaths(cache(), REPO), etag)
    seen = []
    real_write = download._write

    def spy(fd, data, offset, remote):
        if remote.path == "model.safetensors" and not seen:
            seen.append(json.loads(state.read_text()))
        real_write(fd, data, offset, remote)

    monkeypatch.setattr(download, "_write", spy)
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    layout = seen[0]  # (two range threads may both have looked before either appended)
    # A pull of 64 MiB over 32 connections: parts of parts.MIN_PART, written down before any byte.
    step = parts.MIN_PART
    assert [(s, e) for s, e, _ in layout["parts"]] == [(start, start + step) for start in range(0, BIG, step)]


# -- resume state that is not what modelmgr wrote ---------------------------------------------------

@pytest.mark.parametrize("state", [
    "null", "[]", '"parts"', "{}",
    '{"etag": "%(etag)s", "size": %(size)d, "parts": [[0, 1e400, 0]]}',
    '{"etag": "%(etag)s", "size": 1e400, "parts": [[0, 1, 0]]}',
    '{"etag": "%(etag)s", "size": %(size)d, "parts": "nope"}',
    '{"etag": "%(etag)s", "size": %(size)d, "parts": [[0, %(size)d, true]]}',
    '\xff\xfe not json',
], ids=["null", "list", "string", "empty", "end-1e400", "size-1e400", "parts-string", "done-bool", "bytes"])
def test_a_corrupt_resume_state_is_treated_as_absent_with_a_warning(capsys, hub_factory, medium_dir, state):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    paths = RepoPaths(cache(), REPO)
    paths.blobs.mkdir(parents=True)
    paths.incomplete(etag).write_bytes(b"\0" * (MEDIUM // 2))
    state_path = state_file(paths, etag)
    state_path.parent.mkdir(parents=True)
    state_path.write_bytes((state % {"etag": etag, "size": MEDIUM}).encode("latin-1"))
    dry = cli(capsys, "pull", REPO, "--endpoint", hub.url, "--dry-run")
    assert dry.code == 0, dry.err
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "resume state" in outcome.err and "starting the file over" in outcome.err, outcome.err
    # The zeros on disk were not taken for a prefix: the whole file came over the network.
    assert requested_bytes(weight_gets(hub), MEDIUM) == MEDIUM
    assert_complete(medium_dir, commit, etag)


# -- a server that ignores Range ----------------------------------------------------------------

def test_ignored_range_on_resume_starts_the_file_over_cleanly(capsys, hub_factory, medium_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    half = interrupt_pull(capsys, hub, MEDIUM)
    hub.add_fault(IgnoreRange(), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "ignored a byte range; starting the file over" in outcome.err
    ranged, whole = weight_gets(hub)
    assert ranged.headers["range"] == f"bytes={half}-{MEDIUM - 1}" and ranged.status == 200
    assert "range" not in whole.headers and whole.status == 200
    assert_complete(medium_dir, commit, etag)  # exactly the file: nothing appended twice


def test_ignored_range_within_one_pull_starts_over(capsys, hub_factory, medium_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    hub.add_fault(ShortBody(missing_bytes=MEDIUM // 3), path="*/model.safetensors")
    hub.add_fault(IgnoreRange(), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert [r.status for r in weight_gets(hub)] == [200, 200, 200]
    assert_complete(medium_dir, commit, etag)


def test_a_resume_answered_416_starts_the_file_over_instead_of_failing_every_rerun(capsys, hub_factory, medium_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, medium_dir)
    etag = sha256(medium_dir / "model.safetensors")
    half = interrupt_pull(capsys, hub, MEDIUM)
    hub.add_fault(RefuseRange(), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "refused a byte range (HTTP 416); starting the file over" in outcome.err
    refused, whole = weight_gets(hub)
    assert refused.headers["range"] == f"bytes={half}-{MEDIUM - 1}" and refused.status == 416
    assert "range" not in whole.headers and whole.status == 200
    assert_complete(medium_dir, commit, etag)


def test_a_server_ignoring_range_still_serves_a_file_big_enough_to_be_split(capsys, hub_factory, big_dir):
    hub = hub_factory()
    commit = hub.add_repo(REPO, big_dir)
    etag = sha256(big_dir / "model.safetensors")
    hub.add_fault(IgnoreRange(), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    # The split's range requests were answered with the whole file; then one plain GET.
    assert "range" not in weight_gets(hub)[-1].headers
    assert_complete(big_dir, commit, etag)


# -- progress output -----------------------------------------------------------------------------

def test_a_non_terminal_run_prints_plain_lines(hub_factory, medium_dir):
    hub = hub_factory()
    hub.add_repo(REPO, medium_dir)
    outcome = run_modelmgr("pull", REPO, env={"HF_ENDPOINT": hub.url})
    assert outcome.code == 0, outcome.err
    assert "\r" not in outcome.err and "\x1b" not in outcome.err
    lines = outcome.err.splitlines()
    assert f"fetching model.safetensors ({format_size(MEDIUM)})" in lines
    assert f"done     model.safetensors ({format_size(MEDIUM)})" in lines
    assert "\x1b" not in outcome.out and outcome.out.startswith(f"Pulled {REPO}@main")


def test_progress_view_draws_ansi_bars_on_a_terminal():
    from modelmgr.commands._progress import ProgressView
    from modelmgr.fetch.events import BytesReceived, FileFinished, FileStarted, Notice

    stream = io.StringIO()
    view = ProgressView(total_bytes=2000, stream=stream, tty=True)
    view(FileStarted("model.safetensors", 2000))
    view(BytesReceived("model.safetensors", 1000))
    view(Notice("mirror1 failed; trying the next endpoint"))
    view(BytesReceived("model.safetensors", 1000))
    view(FileFinished("model.safetensors", 2000))
    view.close()
    text = stream.getvalue()
    assert "\x1b[" in text and "F\x1b[J" in text  # cursor up, erase: bars redrawn in place
    assert "[############............]  50.0%" in text
    assert re.search(r"model\.safetensors\s+\[############\.{12}\]", text)
    assert "note: mirror1 failed; trying the next endpoint\n" in text
    assert "fetching" not in text  # the plain lines are for logs, not for terminals
