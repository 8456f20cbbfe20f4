"""Reading the repos of a large cache in several processes at once.

What a scan costs is system calls: a repo of two revisions takes some forty (listings, a readlink
per file, an lstat per blob, its refs), each 2-3 µs on a virtual machine, about as long as the
Python work around them. Threads cannot overlap that work, since everything between two calls
holds the GIL (tried: two threads took longer than one); processes can. So where ``list`` and
``du`` must read hundreds of repos, this process forks helpers and reads along with them.

The repos are cut into chunks whose numbers wait in a pipe; every process takes the next number
when it is free (a read of one number is atomic), so a process on a busier CPU simply reads
fewer chunks. (Fixed halves were tried first: on a virtual machine one CPU is often slower, and
the faster process then sat waiting for the other.) Each helper sends back what it found, with
its warnings, as marshal data; everything is put back in folder order.

A fork is made only where it is safe and pays for itself:

- on Linux: elsewhere processes are better spawned than forked, and spawning costs more than the
  scan saves;
- from a process of one thread: a fork copies the locks another thread may hold;
- with at least ``MIN_REPOS_PER_PROCESS`` repos for each process, and a CPU for each;
- unless ``MODELMGR_SCAN_WORKERS`` sets the number of processes (``1`` turns helpers off; any
  other number is taken as it is, whatever the count of CPUs and repos).

A helper never decides the result: one that fails in any way (killed, an exception, a short or
garbled answer) costs only time, since the chunks nobody answered for are then read here.
"""
from __future__ import annotations

import gc
import marshal
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from modelmgr.cache.walk import Warn

MIN_REPOS_PER_PROCESS = 150  # below this, forking and merging cost more than reading in one process
MAX_PROCESSES = 4  # past this, the disk and the merge in this process dominate
CHUNK = 16  # repos a process takes at a time: a few milliseconds of work
MAX_CHUNKS = 1024  # the chunk numbers (4 bytes each) fit in one page of the pipe, written before any fork
SETTING = "MODELMGR_SCAN_WORKERS"

ScanOne = Callable[[Any, Warn], Any]  # scan_one(item, warn) -> a result
# One chunk as it travels and is merged: (chunk number, [(result or its packed form, [(path, message)])]).
Chunk = tuple[int, list]


def process_count(repos: int, warn: Warn) -> int:
    """How many processes should read ``repos`` repos: 1 unless helpers are safe and pay (or the
    setting asks for a number: then that many, where helpers are safe)."""
    setting = os.environ.get(SETTING, "").strip()
    wanted = None
    if setting:
        if setting.isdigit() and int(setting) >= 1:
            wanted = int(setting)
        else:
            warn(SETTING, f"{SETTING}={setting[:40]!r} is not a number of processes (1 reads in this process only); ignored.")
    if wanted == 1 or repos < 2 or not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 1
    if threading.active_count() > 1:
        return 1
    if wanted is not None:
        return min(wanted, repos)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_PROCESSES, cpus, repos // MIN_REPOS_PER_PROCESS))


def scan_split(
    items: Sequence, scan_one: ScanOne, warn: Warn, processes: int,
    pack: Callable[[Any], Any], unpack: Callable[[Any], Any],
) -> list:
    """``[scan_one(item, warn) for item in items]``, read by this process and forked helpers."""
    size = max(CHUNK, -(-len(items) // MAX_CHUNKS))
    chunks = [items[start:start + size] for start in range(0, len(items), size)]
    queue_read, queue_write = os.pipe()
    try:
        os.write(queue_write, b"".join(number.to_bytes(4, "little") for number in range(len(chunks))))
    finally:
        os.close(queue_write)  # readers see the end of the queue once it is empty
    helpers: list[tuple[int, int]] = []  # (pid, the read end of its answer pipe)
    # A fork shares this process's memory page by page until either side writes to a page. The
    # collector writes to every object it visits, so a full collection on either side would copy
    # the whole heap: what exists now is frozen out of its reach until the helpers are done.
    gc.freeze()
    try:
        for _ in range(processes - 1):
            helpers.append(_start_helper(queue_read, chunks, scan_one, pack))
        done: dict[int, list] = dict(_take_chunks(queue_read, chunks, scan_one, lambda result: result))
        while helpers:
            pid, answer_read = helpers.pop()
            for number, answers in _decode(_collect(pid, answer_read), chunks, unpack):
                done.setdefault(number, answers)
        results = []
        for number, part in enumerate(chunks):
            if number not in done:  # taken by a helper that failed: read here
                done.update(_run_chunk(number, part, scan_one, lambda result: result))
            for result, warnings in done[number]:
                for path, message in warnings:
                    warn(path, message)
                results.append(result)
        return results
    finally:
        os.close(queue_read)
        for pid, answer_read in helpers:  # an exception (Ctrl-C) left these running
            _stop(pid, answer_read)
        gc.unfreeze()


def _take_chunks(queue_read: int, chunks: list, scan_one: ScanOne, pack: Callable[[Any], Any]) -> list[Chunk]:
    """Read chunks, numbers taken from the queue, until it is empty."""
    found: list[Chunk] = []
    while True:
        number = os.read(queue_read, 4)
        if len(number) != 4:
            return found
        number = int.from_bytes(number, "little")
        found.extend(_run_chunk(number, chunks[number], scan_one, pack))


def _run_chunk(number: int, part: Sequence, scan_one: ScanOne, pack: Callable[[Any], Any]) -> list[Chunk]:
    answers = []
    for item in part:
        warnings: list[tuple[str, str]] = []
        answers.append((pack(scan_one(item, lambda path, message: warnings.append((path, message)))), warnings))
    return [(number, answers)]


def _start_helper(queue_read: int, chunks: list, scan_one: ScanOne, pack: Callable[[Any], Any]) -> tuple[int, int]:
    answer_read, answer_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(answer_write)
        return pid, answer_read
    # The helper. Whatever happens, it leaves by os._exit: never through this process's atexit
    # handlers or its buffered stdout, and never back into the caller's code.
    code = 1
    try:
        os.close(answer_read)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it at once; the parent cleans up
        gc.disable()  # short-lived, and a scan makes no reference cycles: collecting would only copy pages
        view = memoryview(marshal.dumps(_take_chunks(queue_read, chunks, scan_one, pack)))
        while view:
            view = view[os.write(answer_write, view):]
        code = 0
    finally:
        os._exit(code)


def _collect(pid: int, answer_read: int) -> bytes | None:
    """What the helper wrote, once it has ended; None unless it ended well."""
    parts = []
    try:
        while True:
            part = os.read(answer_read, 1 << 20)
            if not part:
                break
            parts.append(part)
    finally:
        os.close(answer_read)
        _, status = os.waitpid(pid, 0)
    return b"".join(parts) if status == 0 else None


def _decode(data: bytes | None, chunks: list, unpack: Callable[[Any], Any]) -> list[Chunk]:
    """The chunks a helper answered for; none at all when its answer is not whole."""
    if data is None:
        return []
    try:
        answer = marshal.loads(data)
        decoded = []
        for number, answers in answer:
            if type(number) is not int or not 0 <= number < len(chunks) or len(answers) != len(chunks[number]):
                return []
            if not all(type(path) is str and type(message) is str for _, warnings in answers for path, message in warnings):
                return []
            decoded.append((number, [(unpack(packed), warnings) for packed, warnings in answers]))
    except (EOFError, ValueError, TypeError, IndexError):
        return []
    return decoded


def _stop(pid: int, answer_read: int) -> None:
    os.close(answer_read)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
