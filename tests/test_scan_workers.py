"""A large cache read by forked helpers (``cache/scan_workers.py``) reads exactly as in one process:
the same repos and warnings in the same order; a helper that dies or cannot answer costs only
time; an interrupted scan leaves no helper behind. And the command line, which ends the process
without the interpreter's teardown where nothing else would run, still prints all it has."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from modelmgr.cache import scan_workers
from modelmgr.cache.scan import scan_cache

from .helpers import run_modelmgr
from .test_cache import C1, C2, build_repo, standard_cache

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="helpers are forked on Linux only"),
    # Python 3.12 warns when a process with threads forks; this one has the servers of other
    # tests running, which a helper never touches (modelmgr itself forks only with one thread).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The pids of the helpers forked, as the parent saw them. The servers other tests leave
    running are threads of this process, which would keep it from forking at all; they do not
    touch what a helper does."""
    monkeypatch.setattr(scan_workers.threading, "active_count", lambda: 1)
    real, pids = os.fork, []

    def counting() -> int:
        pid = real()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting)
    return pids


REVISIONS = 3 + 36 * 2 + 1 + 1  # in varied_cache


def varied_cache(cache: Path) -> None:
    """Forty repos: two revisions each, and among them every kind of trouble the scan warns about."""
    cache.mkdir(parents=True, exist_ok=True)
    standard_cache(cache)
    for index in range(36):
        build_repo(cache, f"org/model-{index:02d}", {C1: {"config.json": b"{}" * index, "w.safetensors": b"w" * (index + 1)},
                                                     C2: {"config.json": b"{}" * index, "w.safetensors": b"v" * (index + 2)}},
                   refs={"main": C2, "v1": C1})
    broken = build_repo(cache, "org/broken", {C1: {"w.safetensors": b"gone"}}, refs={"main": C1})
    for blob in broken.blobs.iterdir():
        blob.unlink()
    dangling = build_repo(cache, "org/dangling", {C1: {"a.json": b"a"}}, refs={"main": C2})
    (dangling.ref("bad")).write_text("../../outside")


def test_a_cache_read_by_helpers_is_the_cache_read_in_one_process(tmp_path, monkeypatch, forks):
    cache = tmp_path / "hub"
    varied_cache(cache)
    monkeypatch.setenv("MODELMGR_SCAN_INDEX", "0")
    monkeypatch.setenv(scan_workers.SETTING, "1")
    alone = scan_cache([cache], reuse=True, parallel=True)
    assert forks == []
    monkeypatch.setattr(scan_workers, "CHUNK", 2)  # twenty chunks for three processes to share
    monkeypatch.setenv(scan_workers.SETTING, "3")
    shared = scan_cache([cache], reuse=True, parallel=True)
    assert len(forks) == 2

    assert [repo.repo_id for repo in shared.repos] == [repo.repo_id for repo in alone.repos]
    assert shared.repos == alone.repos  # every field the dataclasses compare
    assert [repo.content for repo in shared.repos] == [repo.content for repo in alone.repos]
    assert shared.warnings == alone.warnings and len(alone.warnings) >= 3  # same lines, same order
    assert shared.size_on_disk == alone.size_on_disk
    # Raw file entries are not kept by a summary scan, whoever read the repo; they are read again when asked for.
    model = next(repo for repo in shared.repos if repo.repo_id == "org/model")
    assert all(revision.scanned is None for revision in model.revisions)
    full = next(repo for repo in scan_cache([cache]).repos if repo.repo_id == "org/model")
    assert [revision.files for revision in model.revisions] == [revision.files for revision in full.revisions]


def slow_square(item: int, warn) -> int:
    time.sleep(0.01)
    warn(f"/item/{item}", f"item {item} read by {os.getpid()}")
    return item * item


class Handshake:
    """Lets the parent wait, inside its first item, until the helper has read some: what each
    test says of the helper's share then holds however late the helper was started."""

    def __init__(self) -> None:
        self.parent = os.getpid()
        self.read_end, self.write_end = os.pipe()
        self.waited = False

    def in_helper(self) -> bool:
        return os.getpid() != self.parent

    def helper_read_one(self) -> None:
        os.write(self.write_end, b".")

    def wait_for(self, count: int) -> None:
        """In the parent, once: until the helper has said it read ``count`` items."""
        if self.waited:
            return
        self.waited = True
        got = 0
        while got < count:
            ready, _, _ = select.select([self.read_end], [], [], 60)
            assert ready, "the helper never read an item"
            got += len(os.read(self.read_end, count - got))


def test_the_work_is_shared_and_put_back_in_order(forks, monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    handshake, warnings = Handshake(), []

    def square(item: int, warn) -> int:
        result = slow_square(item, warn)
        handshake.helper_read_one() if handshake.in_helper() else handshake.wait_for(1)
        return result

    results = scan_workers.scan_split(list(range(12)), square, lambda p, m: warnings.append((p, m)), 2,
                                      pack=lambda r: r, unpack=lambda r: r)
    assert results == [item * item for item in range(12)]
    assert [path for path, _ in warnings] == [f"/item/{item}" for item in range(12)]
    readers = {message.rsplit(" ", 1)[1] for _, message in warnings}
    assert readers == {str(handshake.parent), str(forks[0])}  # both processes took items


def test_a_helper_that_dies_costs_only_time(forks, monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    handshake, read_here = Handshake(), []

    def dies_in_helper(item: int, warn) -> int:
        if handshake.in_helper():
            handshake.helper_read_one()
            os.kill(os.getpid(), signal.SIGKILL)
        handshake.wait_for(1)
        read_here.append(item)
        return item + 1

    results = scan_workers.scan_split(list(range(10)), dies_in_helper, lambda p, m: None, 2,
                                      pack=lambda r: r, unpack=lambda r: r)
    assert results == [item + 1 for item in range(10)]
    assert sorted(read_here) == list(range(10))  # the item the helper took and died with too
    assert len(forks) == 1


def test_what_a_helper_sent_before_it_died_is_kept(forks, monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    handshake, read_here = Handshake(), []

    def dies_at_its_fourth(item: int, warn) -> tuple[int, int]:
        if handshake.in_helper():
            dies_at_its_fourth.count += 1  # the helper's own copy of the count
            if dies_at_its_fourth.count > 3:
                os.kill(os.getpid(), signal.SIGKILL)
            handshake.helper_read_one()
        else:
            handshake.wait_for(3)
            read_here.append(item)
        return item, os.getpid()

    dies_at_its_fourth.count = 0
    results = scan_workers.scan_split(list(range(12)), dies_at_its_fourth, lambda p, m: None, 2,
                                      pack=lambda r: r, unpack=tuple)
    assert [item for item, _ in results] == list(range(12))
    by_helper = [item for item, pid in results if pid == forks[0]]
    assert len(by_helper) == 3  # sent before it died, and not read again here
    assert sorted(read_here + by_helper) == list(range(12))


def test_a_helper_that_cannot_send_its_answer_costs_only_time(forks, monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    handshake = Handshake()

    def square(item: int, warn) -> int:
        handshake.helper_read_one() if handshake.in_helper() else handshake.wait_for(1)
        return item * item

    results = scan_workers.scan_split(list(range(8)), square, lambda p, m: None, 2,
                                      pack=lambda r: object(), unpack=lambda r: r)  # marshal refuses an object()
    assert results == [item * item for item in range(8)]
    assert len(forks) == 1


def test_a_fork_refused_reads_with_fewer_processes(monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    real, forked = os.fork, []

    def second_refused() -> int:
        if forked:
            raise BlockingIOError(11, "Resource temporarily unavailable")  # what fork says at the process limit
        pid = real()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", second_refused)
    results = scan_workers.scan_split(list(range(9)), slow_square, lambda p, m: None, 3, pack=lambda r: r, unpack=lambda r: r)
    assert results == [item * item for item in range(9)] and len(forked) == 1


def test_an_interrupted_scan_leaves_no_helper_behind(forks, monkeypatch):
    monkeypatch.setattr(scan_workers, "CHUNK", 1)
    parent = os.getpid()

    def interrupted(item: int, warn) -> int:
        time.sleep(0.01)
        if os.getpid() == parent and item >= 2:
            raise KeyboardInterrupt
        return item

    with pytest.raises(KeyboardInterrupt):
        scan_workers.scan_split(list(range(50)), interrupted, lambda p, m: None, 2, pack=lambda r: r, unpack=lambda r: r)
    assert len(forks) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # reaped already: no zombie, no orphan still reading


def test_how_many_processes(monkeypatch):
    warned: list[str] = []
    warn = lambda path, message: warned.append(message)  # noqa: E731
    real_count = threading.active_count
    monkeypatch.setattr(scan_workers.threading, "active_count", lambda: 1)  # see forks()
    monkeypatch.delenv(scan_workers.SETTING, raising=False)
    assert scan_workers.process_count(scan_workers.MIN_REPOS_PER_PROCESS - 1, warn) == 1  # too few to pay
    cpus = len(os.sched_getaffinity(0))
    assert scan_workers.process_count(100_000, warn) == min(cpus, scan_workers.MAX_PROCESSES)
    monkeypatch.setenv(scan_workers.SETTING, "1")
    assert scan_workers.process_count(100_000, warn) == 1
    monkeypatch.setenv(scan_workers.SETTING, "3")
    assert scan_workers.process_count(10, warn) == 3  # asked for: taken as it is
    monkeypatch.setenv(scan_workers.SETTING, "100000")
    assert scan_workers.process_count(10**6, warn) == scan_workers.MAX_ASKED
    assert warned == []
    for bad in ("many", "\u00b2", "9" * 5000):  # a superscript two is a digit to str.isdigit, not to int()
        monkeypatch.setenv(scan_workers.SETTING, bad)
        assert scan_workers.process_count(10, warn) == 1
    assert warned[0] == "MODELMGR_SCAN_WORKERS='many' is not a number of processes (1 reads in this process only); ignored."
    assert len(warned) == 3
    # A process with other threads never forks: the child would inherit locks those threads hold.
    monkeypatch.setenv(scan_workers.SETTING, "3")
    monkeypatch.setattr(scan_workers.threading, "active_count", real_count)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert scan_workers.process_count(100_000, warn) == 1
    finally:
        stop.set()
        thread.join()


def test_list_and_du_print_the_same_with_and_without_helpers(tmp_path):
    cache = tmp_path / "hub"
    varied_cache(cache)
    env = {"HF_HUB_CACHE": str(cache), "MODELMGR_SCAN_INDEX": "0"}
    for command in (["list", "--json"], ["du", "--json"]):  # (the tables say how long ago: not comparable)
        alone = run_modelmgr(*command, env={**env, scan_workers.SETTING: "1"})
        shared = run_modelmgr(*command, env={**env, scan_workers.SETTING: "2"})
        assert alone.code == shared.code == 0, alone.err + shared.err
        assert shared.err == alone.err and "broken link" in shared.err
        if command[0] == "du":  # the disk's free space may change between the two runs
            alone.out, shared.out = (json.loads(outcome.out)["repos"] for outcome in (alone, shared))
        assert shared.out == alone.out and "org/model-35" in str(shared.out)


def test_the_command_line_ends_at_once_only_when_nothing_else_would_run(tmp_path):
    """Without the interpreter's teardown the output is still all there, and the exit code is kept;
    an exit handler someone registered still runs."""
    cache = tmp_path / "hub"
    varied_cache(cache)
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}
    listed = run_modelmgr("list", "--json", env=env)
    assert listed.code == 0 and len(json.loads(listed.out)) == REVISIONS
    assert run_modelmgr("list", "--sort", "sideways", env=env).code == 2
    script = textwrap.dedent("""
        import atexit, sys
        from modelmgr.cli import main
        atexit.register(lambda: print("handler ran"))
        sys.argv = ["modelmgr", "list", "--json"]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("handler ran")


@pytest.mark.skipif(any(name.startswith(("COV_CORE_", "COVERAGE_PROCESS")) for name in os.environ),
                    reason="coverage in subprocesses registers an exit handler, so the normal exit is taken")
def test_ending_at_once_flushes_what_was_written_and_keeps_the_code():
    script = "import sys\nfrom modelmgr.cli import _leave\nsys.stdout.write('buffered')\nsys.stderr.write('also')\n_leave(3)\nprint('not reached')\n"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}  # a pipe: block-buffered
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "buffered", "also")
