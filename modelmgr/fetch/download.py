"""Fetch one blob: byte ranges over parallel connections, endpoint fallback per range, resume
from what is on disk, and a sha256 / git-sha1 check before the blob gets its final name.

Partial data lives in ``blobs/{etag}.incomplete`` (huggingface_hub's own name for it); which
ranges are done is kept in ``.modelmgr/partial/{etag}.json``, saved only after the bytes it
describes were written, so after ``kill -9`` it can lag behind the data but never run ahead.
The hash follows the contiguous prefix of the file from disk (page cache), in its own thread
for large files, so hashing overlaps the transfer instead of serialising it.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelmgr import errors
from modelmgr.project.config import Endpoint
from modelmgr.fetch.events import BytesReceived, EventSink, FileStarted, Notice
from modelmgr.fsutil import make_dirs, open_shared, write_atomic
from modelmgr.cache.hashing import new_hasher
from modelmgr.fetch.hub import MAX_RETRY_AFTER, DefinitiveAnswer, HubClient, RemoteFile
from modelmgr.cache.layout import RepoPaths
from modelmgr.cache.locking import file_lock
from modelmgr.fetch.transport import EndpointFailure
from modelmgr.fetch.writeback import start_writeback

BUFFER = 1024 * 1024
MIN_PART = 32 * 1024 * 1024  # below this a second connection costs more than it brings
STATE_EVERY = 16 * 1024 * 1024  # persist resume state after this much progress...
STATE_SECONDS = 1.0  # ...or after this long, so a slow link never loses more than a second's bytes
WRITEBACK_EVERY = 16 * 1024 * 1024  # start writing to disk behind the download (see writeback.py)
SMALL_FILE = 4 * 1024 * 1024  # smaller files restart from zero instead of keeping state
ATTEMPTS_PER_ENDPOINT = 2
MAX_RESTARTS = 3


class RangeIgnored(Exception):
    """The server answered a range request with the whole file."""


@dataclass
class Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def offset(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.start + self.done >= self.end


@dataclass
class Transfer:
    """Shared settings for every file of one pull."""

    client: HubClient
    paths: RepoPaths
    repo_id: str
    commit: str
    repo_type: str
    endpoints: tuple[Endpoint, ...]
    connections: int
    slots: threading.Semaphore
    emit: EventSink
    fsync: bool = True
    no_range: set[str] = field(default_factory=set)  # endpoints seen ignoring Range
    stopped: threading.Event = field(default_factory=threading.Event)  # the user interrupted the pull
    lock: threading.Lock = field(default_factory=threading.Lock)


def split(size: int, prefix: int, connections: int) -> list[Part]:
    parts = [Part(0, prefix, prefix)] if prefix else []
    remaining = size - prefix
    count = max(1, min(connections, remaining // MIN_PART))
    step = -(-remaining // count) if remaining else 0
    start = prefix
    while start < size:
        end = min(size, start + step)
        parts.append(Part(start, end))
        start = end
    return parts or [Part(0, 0)]


class _Progress:
    """Parts of one file, the contiguous prefix a hasher may read, and the resume state file."""

    def __init__(self, parts: list[Part], state_path: Path | None, etag: str, size: int):
        self.parts = parts
        self.cond = threading.Condition()
        self.state_path = state_path
        self.etag = etag
        self.size = size
        self.unsaved = 0
        self.saved_at = time.monotonic()
        self.stop = False

    def prefix(self) -> int:
        position = 0
        for part in self.parts:
            if part.start != position:
                break
            position = part.offset
            if not part.complete:
                break
        return position

    def advance(self, part: Part, count: int) -> None:
        with self.cond:
            part.done += count
            self.unsaved += count
            if self.unsaved >= STATE_EVERY or time.monotonic() - self.saved_at >= STATE_SECONDS:
                self.save_locked()
            self.cond.notify_all()

    def save_locked(self) -> None:
        self.unsaved = 0
        self.saved_at = time.monotonic()
        if self.state_path is None:
            return
        data = {"etag": self.etag, "size": self.size, "parts": [[p.start, p.end, p.done] for p in self.parts]}
        try:
            write_atomic(self.state_path, json.dumps(data))
        except OSError:
            pass  # losing resume state costs a re-download, never correctness

    def save(self) -> None:
        with self.cond:
            self.save_locked()


def state_file(paths: RepoPaths, etag: str) -> Path:
    return paths.root / ".modelmgr" / "partial" / f"{etag}.json"


def resumable_bytes(paths: RepoPaths, remote: RemoteFile) -> int:
    """Bytes of a partial download the next pull will keep, as the download itself counts them.

    Not the size of ``.incomplete``: ranges are written at their offsets, so a file fetched over
    several connections is sparse and its size overstates what is there. Small files restart.
    """
    incomplete = paths.incomplete(remote.etag)
    if remote.size <= SMALL_FILE or not incomplete.exists():
        return 0
    parts = load_parts(state_file(paths, remote.etag), incomplete, remote.etag, remote.size, 1)
    return sum(p.done for p in parts)


def load_parts(state_path: Path, incomplete: Path, etag: str, size: int, connections: int) -> list[Part]:
    """Resume state, or a fresh split. Trust the state only when it describes this very blob."""
    try:
        on_disk = os.path.getsize(incomplete)
    except OSError:
        on_disk = 0
    try:
        data = json.loads(state_path.read_text())
        if data.get("etag") == etag and data.get("size") == size:
            parts = [Part(int(s), int(e), int(d)) for s, e, d in data["parts"]]
            position = 0
            for part in parts:
                if part.start != position or not 0 <= part.done <= part.end - part.start:
                    raise ValueError("parts do not tile the file")
                position = part.end
            if position == size and on_disk >= max((p.offset for p in parts if p.done), default=0):
                return parts
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # No usable state: a sequentially written partial file is still a valid prefix.
    prefix = min(on_disk, size) if on_disk and not state_path.exists() else 0
    return split(size, prefix, connections)


class _Hasher:
    """Hashes the file's contiguous prefix as it grows, reading back what writers put on disk."""

    def __init__(self, fd: int, remote: RemoteFile, progress: _Progress):
        self.fd = fd
        self.remote = remote
        self.progress = progress
        self.hasher = new_hasher(remote.etag, remote.size)
        self.position = 0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._view: memoryview | None = None

    def _hash_to(self, target: int) -> None:
        if self.position >= target:
            return
        # One buffer reused for every read: a fresh multi-megabyte bytes object per read costs an
        # mmap, page faults and an munmap each time, as much CPU as the copy itself.
        view = self._buffer()
        while self.position < target:
            count = os.preadv(self.fd, [view[: min(len(view), target - self.position)]], self.position)
            if not count:
                raise OSError(errno.EIO, "file shorter than the bytes written to it")
            self.hasher.update(view[:count])
            self.position += count

    def _buffer(self) -> memoryview:
        if self._view is None:
            self._view = memoryview(bytearray(min(8 * BUFFER, max(self.remote.size, 1))))
        return self._view

    def _run(self) -> None:
        try:
            while True:
                with self.progress.cond:
                    while self.progress.prefix() <= self.position and not self.progress.stop:
                        self.progress.cond.wait(0.5)
                    target, stop = self.progress.prefix(), self.progress.stop
                self._hash_to(target)
                if stop:
                    return
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def start(self) -> None:
        if self.remote.size >= 2 * MIN_PART:
            self.thread = threading.Thread(target=self._run, name=f"hash {self.remote.path}", daemon=True)
            self.thread.start()

    def finish(self) -> str:
        if self.thread is not None:
            with self.progress.cond:
                self.progress.stop = True
                self.progress.cond.notify_all()
            self.thread.join()
            if self.error is not None:
                raise self.error
        self._hash_to(self.remote.size)
        return self.hasher.hexdigest()

    def abandon(self) -> None:
        if self.thread is not None:
            with self.progress.cond:
                self.progress.stop = True
                self.progress.cond.notify_all()
            self.thread.join()


def fetch_blob(transfer: Transfer, remote: RemoteFile) -> bool:
    """Make ``blobs/{etag}`` exist and verified. Returns False when it was already there."""
    paths = transfer.paths
    blob = paths.blob(remote.etag)
    if _present(blob, remote.size):
        return False
    waited = []
    with file_lock(paths.locks / f"{remote.etag}.lock", on_wait=lambda: waited.append(True)):
        if _present(blob, remote.size):  # another process finished it while we waited
            return False
        if waited:
            transfer.emit(Notice(f"{remote.path}: another process was downloading it; continuing"))
        _download_locked(transfer, remote)
    return True


def _present(blob: Path, size: int) -> bool:
    try:
        return os.stat(blob).st_size == size
    except OSError:
        return False


def _download_locked(transfer: Transfer, remote: RemoteFile) -> None:
    paths = transfer.paths
    make_dirs(paths.blobs)
    incomplete = paths.incomplete(remote.etag)
    state_path = state_file(paths, remote.etag)
    state_dir = state_path.parent
    keep_state = remote.size > SMALL_FILE
    if keep_state:
        make_dirs(state_dir)
    excluded: set[str] = set()
    whole = not keep_state  # one connection from byte 0, no resume state
    distrust_partial = False
    for restart in range(MAX_RESTARTS + len(transfer.endpoints)):
        parts = split(remote.size, 0, 1) if whole else load_parts(state_path, incomplete, remote.etag, remote.size, transfer.connections)
        if _present(paths.blob(remote.etag), remote.size):
            return  # another process committed it (on a filesystem where the lock did not hold)
        if whole or all(p.done == 0 for p in parts):
            _start_afresh(incomplete)
        progress = _Progress(parts, state_path if keep_state else None, remote.etag, remote.size)
        if keep_state and len(parts) > 1:
            # Ranges are written at their own offsets, so the file has holes until it is done.
            # Without a state file a later run would take that sparse file for a sequential
            # prefix (load_parts' fallback) and resume after the holes: record the layout first.
            progress.save()
        resumed = sum(p.done for p in parts)
        transfer.emit(FileStarted(remote.path, remote.size, resumed))
        if resumed:
            transfer.emit(BytesReceived(remote.path, resumed))
        fd = open_shared(incomplete, os.O_RDWR | os.O_CREAT)
        used: set[str] = set()
        hasher = _Hasher(fd, remote, progress)
        try:
            hasher.start()
            _fetch_parts(transfer, remote, fd, progress, excluded, used)
            digest = hasher.finish()
            if digest != remote.etag and resumed and not distrust_partial:
                # The bytes found on disk may be what is wrong (a crash between writes, another
                # tool's partial file): start over once before blaming any endpoint.
                distrust_partial = True
                _discard(incomplete, state_path)
                transfer.emit(Notice(f"{remote.path}: the resumed download did not verify; starting the file over"))
                continue
            if digest != remote.etag and len(used) > 1:
                # Ranges came from several endpoints and the hash cannot say whose bytes were
                # wrong: fetch the file whole from one endpoint at a time, so the next mismatch
                # names its culprit instead of excluding good mirrors with the bad one.
                _discard(incomplete, state_path)
                progress.state_path = None
                whole = True
                transfer.emit(Notice(f"{remote.path}: content hash mismatch from several endpoints; fetching it whole from one"))
                continue
            if digest != remote.etag:
                _discard(incomplete, state_path)
                # The IntegrityError below passes the `except BaseException` that saves the state
                # of an interrupted transfer: there is nothing left for a state file to describe.
                progress.state_path = None
                excluded |= used
                names = ", ".join(sorted(used))
                transfer.emit(Notice(f"{remote.path}: content hash mismatch from {names}; discarded"))
                if all(e.url in excluded for e in transfer.endpoints):
                    # Name every endpoint that served bad bytes, not only the last one tried.
                    culprits = ", ".join(e.url for e in transfer.endpoints if e.url in excluded)
                    raise errors.IntegrityError(
                        f"{remote.path} failed verification: expected {'sha256' if len(remote.etag) == 64 else 'git sha1'} "
                        f"{remote.etag}, got {digest} (from {culprits}). The bytes were discarded; try another endpoint.")
                continue
            if transfer.fsync:
                os.fsync(fd)
            if not _commit_blob(fd, incomplete, paths.blob(remote.etag), remote.size):
                continue
        except RangeIgnored:
            hasher.abandon()
            _discard(incomplete, state_path)
            transfer.emit(Notice(f"{remote.path}: the server ignored a byte range; starting the file over"))
            # Over one connection from byte 0, which needs no Range. A fresh multi-part split
            # would send range requests to the same server again and fail the same way until
            # the restarts ran out (a file of 64 MiB or more could never be fetched from it).
            whole = True
            continue
        except BaseException:
            hasher.abandon()
            progress.save()
            raise
        finally:
            os.close(fd)
        try:
            state_path.unlink()
        except OSError:
            pass
        return
    raise errors.HubError(f"{remote.path}: gave up after {MAX_RESTARTS} restarts (servers ignoring byte ranges?).")


def _start_afresh(path: Path) -> None:
    """Drop a partial file by unlinking it, never by truncating: a second writer that still has it
    open (where the lock did not hold) keeps writing into its own inode, not into ours."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _commit_blob(fd: int, incomplete: Path, blob: Path, size: int) -> bool:
    """Give the verified file its final name, making sure the name holds the very file verified.

    Renaming by path alone could commit another writer's half-written file that replaced ours
    under the same name (possible only where the lock did not hold). When our verified file has
    lost its name that way, its bytes are copied out under a private name and committed.
    """
    private = incomplete.with_name(f"{incomplete.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(incomplete, private)
    except FileNotFoundError:
        return _present(blob, size) or _commit_copy(fd, private, blob, size)
    ours = os.fstat(fd)
    theirs = os.stat(private)
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        try:
            os.rename(private, incomplete)  # not ours: give it back to whoever is writing it
        except OSError:
            _start_afresh(private)
        return _present(blob, size) or _commit_copy(fd, private, blob, size)
    os.replace(private, blob)
    return True


def _commit_copy(fd: int, private: Path, blob: Path, size: int) -> bool:
    out = open_shared(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        offset = 0
        while offset < size:
            sent = os.sendfile(out, fd, offset, size - offset)
            if not sent:
                raise OSError(errno.EIO, "verified file shorter than its size")
            offset += sent
        os.fsync(out)
    except BaseException:
        os.close(out)
        _start_afresh(private)
        raise
    os.close(out)
    os.replace(private, blob)
    return True


def _discard(incomplete: Path, state_path: Path) -> None:
    for path in (incomplete, state_path):
        try:
            path.unlink()
        except OSError:
            pass


def _fetch_parts(transfer: Transfer, remote: RemoteFile, fd: int, progress: _Progress, excluded: set[str], used: set[str]) -> None:
    pending = [part for part in progress.parts if not part.complete]
    if not pending:
        return
    failures: list[BaseException] = []
    cancel = threading.Event()

    def run(part: Part) -> None:
        try:
            _fetch_part(transfer, remote, fd, part, progress, excluded, used, cancel)
        except BaseException as exc:
            failures.append(exc)
            cancel.set()

    helpers = [threading.Thread(target=run, args=(part,), name=f"fetch {remote.path}@{part.start}", daemon=True) for part in pending[1:]]
    for thread in helpers:
        thread.start()
    run(pending[0])
    for thread in helpers:
        thread.join()
    if failures:
        # A range that was ignored wins: it means "start over", not "fail".
        for exc in failures:
            if isinstance(exc, RangeIgnored):
                raise exc
        raise failures[0]


def _endpoint_order(transfer: Transfer, excluded: set[str]) -> list[Endpoint]:
    # The configured order, except that endpoints already given up on in this pull come last.
    rank = {e.url: i for i, e in enumerate(transfer.client.ordered())}
    return sorted((e for e in transfer.endpoints if e.url not in excluded), key=lambda e: rank.get(e.url, -1))


def _fetch_part(transfer, remote, fd, part, progress, excluded, used, cancel) -> None:
    reasons: list[str] = []
    refusals: list[errors.HubError] = []  # answers such as "gated": a rerun would not change them
    for endpoint in _endpoint_order(transfer, excluded):
        attempts = 0
        while attempts < ATTEMPTS_PER_ENDPOINT and not part.complete:
            if cancel.is_set() or transfer.stopped.is_set():
                raise InterruptedError("another range of this file failed, or the pull was interrupted")
            before = part.done
            try:
                with transfer.slots:
                    _stream(transfer, endpoint, remote, fd, part, progress, used, cancel)
                return
            except EndpointFailure as failure:
                if part.done > before:
                    attempts = 0  # a connection that delivered data is not a broken endpoint
                attempts += 1
                if failure.retry_after is not None and failure.retry_after > MAX_RETRY_AFTER:
                    # Asked to come back in an hour: treat the endpoint as down now, as HubClient.call
                    # does, rather than retrying it after 0.2 s and being refused again.
                    attempts = ATTEMPTS_PER_ENDPOINT
                if failure.retry_after is not None and attempts < ATTEMPTS_PER_ENDPOINT:
                    time.sleep(failure.retry_after)
                elif attempts < ATTEMPTS_PER_ENDPOINT:
                    time.sleep(0.2)
                if attempts >= ATTEMPTS_PER_ENDPOINT:
                    reasons.append(f"{endpoint.name}: {failure.reason}")
                    if len(transfer.endpoints) > 1:
                        transfer.client.demote(endpoint)  # later files start with an endpoint that works
                        transfer.emit(Notice(f"{remote.path}: {endpoint.name} failed ({failure.reason}); trying the next endpoint"))
            except DefinitiveAnswer as answer:
                reasons.append(f"{endpoint.name}: {answer.error}")
                refusals.append(answer.error)
                if answer.status in (401, 403) and len(transfer.endpoints) > 1:
                    transfer.emit(Notice(f"{remote.path}: {endpoint.name} refused access (HTTP {answer.status}); trying the next endpoint"))
                break
        if part.complete:
            return
    if part.complete:
        return
    if refusals and len(refusals) == len(reasons):
        raise refusals[0]
    detail = "; ".join(reasons) or "every endpoint was excluded after a failed verification"
    raise errors.HubError(
        f"could not download {remote.path} from any endpoint ({detail}). What was fetched is kept: "
        "run the same pull again to resume.")


def _stream(transfer, endpoint, remote, fd, part, progress, used, cancel) -> None:
    if remote.size == 0:
        return
    whole_file = part.offset == 0 and part.end == remote.size
    use_range = not whole_file
    if use_range and endpoint.url in transfer.no_range:
        raise RangeIgnored()
    response = transfer.client.open_file(
        endpoint, transfer.repo_id, transfer.commit, remote,
        start=part.offset if use_range else 0, end=part.end if use_range else None, repo_type=transfer.repo_type,
    )
    if response.status == 200 and use_range:
        response.close()
        with transfer.lock:
            transfer.no_range.add(endpoint.url)
        raise RangeIgnored()
    used.add(endpoint.url)
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    completed = False
    flushed = part.offset  # where this stream last asked the kernel to start writing to disk
    try:
        while not part.complete:
            if cancel.is_set() or transfer.stopped.is_set():
                raise InterruptedError("another range of this file failed, or the pull was interrupted")
            want = min(BUFFER, part.end - part.offset)
            # Fill the buffer before writing: a slow or capped connection delivers a few KB per
            # read, and writing, locking and reporting each of those would cost more CPU than the
            # bytes themselves. What was received before a failure is still written and kept.
            count, failure = 0, None
            while count < want:
                try:
                    received = response.readinto(view[count:want])
                except (OSError, http.client.HTTPException) as exc:
                    failure = f"transfer broke after {part.offset + count} of {remote.size} bytes ({type(exc).__name__})"
                    break
                if not received:
                    failure = f"connection closed after {part.offset + count} of {remote.size} bytes"
                    break
                count += received
            if count:
                _write(fd, view[:count], part.offset, remote)
                progress.advance(part, count)
                transfer.emit(BytesReceived(remote.path, count))
            if failure is not None:
                raise EndpointFailure(failure)
            if part.offset - flushed >= WRITEBACK_EVERY:
                start_writeback(fd, flushed, part.offset - flushed)
                flushed = part.offset
        completed = True
    finally:
        if completed:
            response.release()
        else:
            response.close()


def _write(fd: int, data: memoryview, offset: int, remote: RemoteFile) -> None:
    try:
        written = os.pwrite(fd, data, offset)
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise errors.DiskSpaceError(
                f"the disk filled up while writing {remote.path}. What was downloaded is kept: free some space "
                "(modelmgr prune) and run the same pull again to resume.") from None
        raise
