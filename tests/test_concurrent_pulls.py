"""Several processes pulling the same model: one downloads each blob, the others wait for it;
a lock left behind by a killed process never hangs the next pull."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmgr.fetch.download import state_file
from modelmgr.cache.layout import RepoPaths

from .helpers import hf_cache as cache, serve
from .helpers import small_repo

MiB = 1024 * 1024
REPO = "org/concurrent"
BIG = 64 * MiB

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrent") / "repo"
    return small_repo(root, weights=BIG, seed=11)


@pytest.fixture
def hub(hub_factory, repo_dir):
    return serve(hub_factory, REPO, repo_dir)


def start_pull(hub) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "modelmgr", "pull", REPO], env={**os.environ, "HF_ENDPOINT": hub.url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def served_bytes(hub, size: int) -> int:
    total = 0
    for r in hub.file_answers("model.safetensors"):  # the Hub's own answers and its CDN's
        if r.status == 200:
            total += size
        elif r.status == 206:
            first, _, last = r.headers["range"][6:].partition("-")
            total += int(last) - int(first) + 1
    return total


def saved_bytes(state: Path) -> int:
    try:
        return sum(done for _, _, done in json.loads(state.read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the pull ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_complete(repo_dir: Path, hub) -> str:
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    paths = RepoPaths(cache(), REPO)
    link = paths.snapshot(hub.commit(REPO)) / "model.safetensors"
    assert link.resolve() == paths.blob(etag)
    assert hashlib.sha256(link.read_bytes()).hexdigest() == etag
    assert not paths.incomplete(etag).exists()
    assert paths.read_ref("main") == hub.commit(REPO)
    return etag


def test_two_processes_pulling_together_download_the_big_file_once(hub, repo_dir):
    hub.set_rate_limit(8_000_000)  # per connection, 8 ranges: ~1 s for the big file, so the pulls overlap
    first, second = start_pull(hub), start_pull(hub)
    outcomes = [p.communicate(timeout=60) for p in (first, second)]
    for process, (out, err) in zip((first, second), outcomes):
        assert process.returncode == 0, err
        assert out.startswith(f"Pulled {REPO}@main")
    # Both really ran against the Hub at the same time: both listed the tree.
    assert len([r for r in hub.requests if "/tree/" in r.path]) == 2
    assert served_bytes(hub, BIG) <= 1.2 * BIG, "the big file was downloaded by both processes"
    assert_complete(repo_dir, hub)


def test_a_pull_waiting_on_a_killed_pulls_lock_takes_over_and_resumes(hub, repo_dir):
    hub.set_rate_limit(2_000_000)  # per connection, 8 ranges: ~4 s for the big file
    paths = RepoPaths(cache(), REPO)
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    state = state_file(paths, etag)
    holder = start_pull(hub)
    wait_for(lambda: saved_bytes(state) >= 8 * MiB, holder, "the first pull made progress")
    waiter = start_pull(hub)
    wait_for(lambda: len([r for r in hub.requests if "/tree/" in r.path]) == 2, waiter, "the second pull listed the tree")
    time.sleep(0.5)  # its small files done, it now blocks on the big file's lock
    hub.set_rate_limit(None)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (paths.locks / f"{etag}.lock").exists(), "the dead process's lock file stays behind"
    kept = saved_bytes(state)
    hub.clear_requests()
    out, err = waiter.communicate(timeout=30)  # bounded: a dead holder's lock is released by the kernel
    assert waiter.returncode == 0, err
    assert "model.safetensors: another process was downloading it; continuing" in err
    assert "resuming at" in err
    assert served_bytes(hub, BIG) <= BIG - kept
    assert_complete(repo_dir, hub)


def test_a_lock_file_left_by_a_killed_pull_never_hangs_the_next(hub, repo_dir):
    hub.set_rate_limit(2_000_000)  # per connection, 8 ranges: ~4 s for the big file
    paths = RepoPaths(cache(), REPO)
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    victim = start_pull(hub)
    wait_for(lambda: saved_bytes(state_file(paths, etag)) >= 4 * MiB, victim, "progress")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    victim.stderr.close()
    assert (paths.locks / f"{etag}.lock").exists()
    hub.set_rate_limit(None)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "modelmgr", "pull", REPO], env={**os.environ, "HF_ENDPOINT": hub.url},
                               capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert "another process" not in completed.stderr
    assert time.monotonic() - started < 30
    assert_complete(repo_dir, hub)


# On some NFS mounts flock "succeeds" without excluding anyone. This runs the real pull with the
# lock turned into exactly that: a lock that never waits.
NO_LOCK_PULL = """
import sys
import modelmgr.cache.locking
modelmgr.cache.locking.fcntl = None  # flock that silently succeeds
from modelmgr.cli import main
main(sys.argv[1:])
"""


def test_two_pulls_stay_correct_when_the_lock_does_not_lock(hub, repo_dir):
    hub.set_rate_limit(12_000_000)  # per connection, 8 ranges
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    pulls = [subprocess.Popen([sys.executable, "-c", NO_LOCK_PULL, "pull", REPO], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in pulls:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
    # Both downloaded (nothing excluded them), yet the blob is the right one and nothing is left over.
    assert served_bytes(hub, BIG) > 1.2 * BIG, "the test needs the two pulls to overlap"
    etag = assert_complete(repo_dir, hub)
    leftovers = [p.name for p in RepoPaths(cache(), REPO).blobs.iterdir() if p.name != etag and len(p.name) > 64]
    assert leftovers == []


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_pull_waiting_on_a_lock_says_at_once_that_it_waits_and_for_what_and_keeps_saying_it(monkeypatch, hub, repo_dir):
    from modelmgr.fetch import download
    from modelmgr.fetch.events import Notice
    from modelmgr.fetch.pull import pull
    from modelmgr.project.config import load_config

    monkeypatch.setattr(download, "LOCK_NOTICE_EVERY", 0.5, raising=False)
    paths = RepoPaths(cache(), REPO)
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    lock = paths.locks / f"{etag}.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock), "2.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    released_at = time.monotonic() + 2.3  # (a little before the holder really lets go)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    notices: list[tuple[float, str]] = []
    started = time.monotonic()
    pull(REPO, config=load_config(), on_event=lambda e: isinstance(e, Notice) and notices.append((time.monotonic(), e.message)))
    holder.wait(timeout=10)
    waiting = [(at, m) for at, m in notices if "waiting" in m and at < released_at]
    assert waiting, notices
    assert waiting[0][0] - started < 1.0, "the first notice came late"
    assert "model.safetensors" in waiting[0][1] and "another process" in waiting[0][1] and str(lock) in waiting[0][1]
    assert len(waiting) >= 3, f"it said so once and went quiet: {notices}"
    assert_complete(repo_dir, hub)
