"""Reading the repos of a large cache in several processes at once.

What a scan costs is system calls: a repo of two revisions takes some forty (listings, a readlink
per file, an lstat per blob, its refs), each 2-3 µs on a virtual machine, about as long as the
Python work around them. Threads cannot overlap that work, since everything between two calls
holds the GIL (tried: two threads took longer than one); processes can. So where ``list`` and
``du`` must read hundreds of repos, this process forks helpers and reads along with them.

The repos are cut into chunks whose numbers wait in a pipe; every process takes the next number
when it is free (a read of one number is atomic), so a process on a busier CPU simply reads
fewer chunks. (Fixed halves were tried first: on a virtual machine one CPU is often slower, and
the faster process then sat waiting for the other.) Each helper sends every chunk, with its
warnings, as marshal data once it is read; this process takes in what arrived between its own
chunks, and puts everything back in folder order.

A fork is made only where it is safe and pays for itself:

- on Linux: elsewhere processes are better spawned than forked, and spawning costs more than the
  scan saves;
- from a process of one thread: a fork copies the locks another thread may hold;
- with at least ``MIN_REPOS_PER_PROCESS`` repos for each process, and a CPU for each;
- unless ``MODELMGR_SCAN_WORKERS`` sets the number of processes (``1`` turns helpers off; any
  other number, up to 64, is taken as it is, whatever the count of CPUs and repos).

A helper never decides the result: one that fails in any way (killed, an exception, a short or
garbled answer) costs only time, since the chunks nobody sent whole are then read here.
"""
from __future__ import annotations

import contextlib
import gc
import marshal
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from modelmgr.cache.walk import Warn

MIN_REPOS_PER_PROCESS = 150  # below this, forking and merging cost more than reading in one process
MAX_PROCESSES = 4  # past this, the disk and the merge in this process dominate
MAX_ASKED = 64  # what MODELMGR_SCAN_WORKERS may ask for: no typo forks thousands of processes
CHUNK = 8  # repos a process takes at a time: a millisecond or two of work
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
        if setting.isascii() and setting.isdigit() and len(setting) <= 9 and int(setting) >= 1:
            wanted = int(setting)
        else:
            warn(SETTING, f"{SETTING}={setting[:40]!r} is not a number of processes (1 reads in this process only); ignored.")
    if wanted == 1 or repos < 2 or not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 1
    if threading.active_count() > 1:
        return 1
    if wanted is not None:
        return min(wanted, repos, MAX_ASKED)
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
    try:
        queue_read, queue_write = os.pipe()
    except OSError:  # no file descriptor left (EMFILE, ENFILE): read everything here
        return [scan_one(item, warn) for item in items]
    try:
        os.write(queue_write, b"".join(number.to_bytes(4, "little") for number in range(len(chunks))))
    finally:
        os.close(queue_write)  # readers see the end of the queue once it is empty
    helpers: list[_Helper] = []
    done: dict[int, list] = {}

    def keep(chunk: Chunk) -> None:  # one of this process's chunks is read: take in what helpers sent meanwhile
        done[chunk[0]] = chunk[1]
        for helper in helpers:
            helper.drain()

    # A fork shares this process's memory page by page until either side writes to a page. The
    # collector writes to every object it visits, so a full collection on either side would copy
    # the whole heap: what exists now is frozen out of its reach until the helpers are done.
    frozen_before = gc.get_freeze_count()  # a caller's own freeze is left as it was
    gc.freeze()
    try:
        with _interrupts_held():
            for _ in range(processes - 1):
                try:
                    helpers.append(_Helper(queue_read, chunks, scan_one, pack, unpack))
                except OSError:  # no more processes or memory for one (EAGAIN, ENOMEM): read with fewer
                    break
        _take_chunks(queue_read, chunks, scan_one, lambda result: result, keep)
        while helpers:
            for number, answers in helpers.pop().finish():
                done.setdefault(number, answers)
        results = []
        for number, part in enumerate(chunks):
            if number not in done:  # taken by a helper that failed before sending it: read here
                done[number] = _run_chunk(number, part, scan_one, lambda result: result)[1]
            for result, warnings in done[number]:
                for path, message in warnings:
                    warn(path, message)
                results.append(result)
        return results
    finally:
        os.close(queue_read)
        for helper in helpers:  # an exception (Ctrl-C) left these running
            helper.stop()
        if not frozen_before:
            gc.unfreeze()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C held back while helpers are forked: one that came between a fork and the code that
    handles it would run the caller's code in the helper, or leave a helper nobody knows of. It is
    delivered at the end of the block, once every helper is known (and a helper, whose pending
    signals start empty, lets it through once it can die of it)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _take_chunks(queue_read: int, chunks: list, scan_one: ScanOne, pack: Callable[[Any], Any],
                 after: Callable[[Chunk], None]) -> None:
    """Read chunks, their numbers taken from the queue, until it is empty; ``after`` gets each."""
    while True:
        number = os.read(queue_read, 4)
        if len(number) != 4:
            return
        number = int.from_bytes(number, "little")
        after(_run_chunk(number, chunks[number], scan_one, pack))


def _run_chunk(number: int, part: Sequence, scan_one: ScanOne, pack: Callable[[Any], Any]) -> Chunk:
    answers = []
    for item in part:
        warnings: list[tuple[str, str]] = []
        answers.append((pack(scan_one(item, lambda path, message: warnings.append((path, message)))), warnings))
    return number, answers


class _Helper:
    """A forked process taking chunks from the queue; it sends each chunk as soon as it is read,
    as a frame (4-byte length, then marshal data), so that little is left to send at the end."""

    def __init__(self, queue_read: int, chunks: list, scan_one: ScanOne, pack: Callable[[Any], Any],
                 unpack: Callable[[Any], Any]) -> None:
        self.chunks, self.unpack = chunks, unpack
        self.received = bytearray()
        self.decoded: list[Chunk] = []  # from the frames taken in so far
        self.position = 0  # where the next frame starts in received
        self.broken = False  # a frame did not decode: nothing after it is trusted
        answer_read, answer_write = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(answer_read)
            os.close(answer_write)
            raise
        if self.pid:
            os.close(answer_write)
            os.set_blocking(answer_read, False)  # drained between this process's own chunks
            self.answer_read = answer_read
            return
        # The helper. Whatever happens, it leaves by os._exit: never through this process's atexit
        # handlers or its buffered stdout, and never back into the caller's code.
        code = 1
        try:
            os.close(answer_read)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it at once; the parent cleans up
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held while forking (_interrupts_held)
            gc.disable()  # short-lived, and a scan makes no reference cycles: collecting would only copy pages

            def send(chunk: Chunk) -> None:
                frame = marshal.dumps(chunk)
                view = memoryview(len(frame).to_bytes(4, "little") + frame)
                while view:
                    view = view[os.write(answer_write, view):]

            _take_chunks(queue_read, chunks, scan_one, pack, send)
            code = 0
        finally:
            os._exit(code)

    def drain(self) -> None:
        """Take in what the helper has sent so far, without waiting, and decode its whole frames
        (here, between this process's own chunks, rather than all at the end)."""
        try:
            while True:
                part = os.read(self.answer_read, 1 << 20)
                if not part:
                    break
                self.received += part
        except BlockingIOError:
            pass
        self._decode_frames()

    def finish(self) -> list[Chunk]:
        """Every chunk the helper sent whole, once it has ended."""
        try:
            os.set_blocking(self.answer_read, True)
            self.drain()
        finally:
            os.close(self.answer_read)
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped by the kernel: a launcher set SIGCHLD to be ignored
                pass
        return self.decoded

    def _decode_frames(self) -> None:
        """Decode the whole frames received; a helper that ended early (killed, an exception) sent
        whole frames before that, and its other chunks are read again by the caller."""
        data, chunks = self.received, self.chunks
        while not self.broken and self.position + 4 <= len(data):
            length = int.from_bytes(data[self.position:self.position + 4], "little")
            if self.position + 4 + length > len(data):
                return  # the rest of this frame is still on its way (or never comes)
            frame = bytes(data[self.position + 4:self.position + 4 + length])
            self.position += 4 + length
            try:
                number, answers = marshal.loads(frame)
                if type(number) is not int or not 0 <= number < len(chunks) or len(answers) != len(chunks[number]):
                    raise ValueError(number)
                if not all(type(path) is str and type(message) is str for _, warnings in answers for path, message in warnings):
                    raise TypeError(answers)
                self.decoded.append((number, [(self.unpack(packed), warnings) for packed, warnings in answers]))
            except Exception:  # noqa: BLE001 - whatever the frame holds, it is read again instead
                self.broken = True

    def stop(self) -> None:
        os.close(self.answer_read)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
