"""Fetch one blob: byte ranges over parallel connections, endpoint fallback per range, resume
from what is on disk, and a sha256 / git-sha1 check before the blob gets its final name.

One ``BlobDownload`` per file owns its parts (fetch/parts.py), its hash (fetch/prefix_hash.py),
its progress and which endpoints served it; which endpoint to ask, and when to give up on one,
is the pull's one policy (fetch/retry.py). Partial data lives in ``blobs/{etag}.incomplete``
(huggingface_hub's own name for it); the verified file is committed by cache/store.py.
"""
from __future__ import annotations

import errno
import http.client
import os
import threading
from dataclasses import dataclass, field

from modelmgr import errors
from modelmgr.cache.layout import RepoPaths
from modelmgr.cache.locking import file_lock
from modelmgr.cache.partials import claim_partial
from modelmgr.cache.store import blob_present, commit_blob, discard, start_afresh
from modelmgr.fetch.events import BytesReceived, EventSink, FileStarted, Notice
from modelmgr.fetch.hub import HubClient, RemoteFile
from modelmgr.fetch.parts import SMALL_FILE, Part, PartsProgress, load_parts, split, state_file
from modelmgr.fetch.prefix_hash import PrefixHasher
from modelmgr.fetch.retry import MAX_RESTARTS, AllFailed, DefinitiveAnswer, EndpointFailure, RangeIgnored, fall_back
from modelmgr.fetch.writeback import start_writeback
from modelmgr.fsutil import make_dirs, open_shared
from modelmgr.project.config import Endpoint
from modelmgr.project.names import hash_kind

__all__ = ["BlobDownload", "Transfer", "fetch_blob", "state_file"]

BUFFER = 1024 * 1024
WRITEBACK_EVERY = 16 * 1024 * 1024  # start writing to disk behind the download (see writeback.py)
LOCK_NOTICE_EVERY = 10.0  # seconds between "still waiting" notices while another process downloads


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
    part_size: int | None = None  # parts.part_size of the pull (None: parts.MIN_PART)
    stopped: threading.Event = field(default_factory=threading.Event)  # the user interrupted the pull


def fetch_blob(transfer: Transfer, remote: RemoteFile) -> bool:
    """Make ``blobs/{etag}`` exist and verified. Returns False when it was already there."""
    return BlobDownload(transfer, remote).run()


class BlobDownload:
    """The download of one blob: its parts, its hash, its progress and the endpoints it used."""

    def __init__(self, transfer: Transfer, remote: RemoteFile):
        self.transfer = transfer
        self.remote = remote
        self.ranking = transfer.client.ranking
        paths = transfer.paths
        self.blob = paths.blob(remote.etag)
        self.incomplete = paths.incomplete(remote.etag)
        self.lock_path = paths.locks / f"{remote.etag}.lock"
        self.state_path = state_file(paths, remote.etag)
        self.keep_state = remote.size > SMALL_FILE
        self.whole = not self.keep_state  # one connection from byte 0, no resume state
        self.distrust_partial = False  # the bytes found on disk already failed to verify once
        self.used: set[str] = set()  # endpoints that served bytes of this attempt
        self.cancel = threading.Event()  # one range of this attempt failed: stop the others
        self.waited = False

    def run(self) -> bool:
        # Before anything is read or written there: a blobs/ or .locks/ folder that is a link
        # would make a file outside the cache count as this blob, or receive its bytes.
        self.transfer.paths.refuse_linked_folders(self.lock_path.parent, self.transfer.paths.blobs)
        if blob_present(self.blob, self.remote.size):
            return False
        with file_lock(self.lock_path, on_wait=self._say_waiting, every=LOCK_NOTICE_EVERY):
            if blob_present(self.blob, self.remote.size):  # another process finished it while we waited
                return False
            if self.waited:
                self.transfer.emit(Notice(f"{self.remote.path}: another process was downloading it; continuing"))
            self._download()
        return True

    def _say_waiting(self) -> None:
        self.waited = True
        self.transfer.emit(Notice(
            f"{self.remote.path}: waiting for another process that is downloading it (it holds {self.lock_path})"))

    # -- attempts --------------------------------------------------------------------------
    def _download(self) -> None:
        paths = self.transfer.paths
        paths.refuse_linked_folders(paths.blobs, paths.partial_states)
        make_dirs(paths.blobs)
        claim_partial(self.transfer.paths, self.remote.etag)  # a planted link or another user's file is not resumed into
        if self.keep_state:
            make_dirs(self.state_path.parent)
        for _ in range(MAX_RESTARTS + len(self.transfer.endpoints)):
            if blob_present(self.blob, self.remote.size):
                return  # another process committed it (on a filesystem where the lock did not hold)
            if self._attempt(self._parts()):
                discard(self.state_path)
                return
        raise errors.HubError(f"{self.remote.path}: gave up after {MAX_RESTARTS} restarts (servers ignoring byte ranges?).")

    def _parts(self) -> list[Part]:
        if self.whole:
            return split(self.remote.size, 0, 1)
        parts, problem = load_parts(self.state_path, self.incomplete, self.remote.etag, self.remote.size,
                                    self.transfer.connections, self.transfer.part_size)
        if problem is not None:
            # Never fatal: a state file modelmgr cannot trust costs a re-download, nothing more.
            discard(self.state_path)
            self.transfer.emit(Notice(f"{self.remote.path}: the resume state {self.state_path} {problem}; starting the file over"))
        return parts

    def _attempt(self, parts: list[Part]) -> bool:
        """One pass over the file's missing parts; True once the verified blob is committed,
        False when the file must start over."""
        remote, emit = self.remote, self.transfer.emit
        if self.whole or all(p.done == 0 for p in parts):
            start_afresh(self.incomplete)
        progress = PartsProgress(parts, self.state_path if self.keep_state else None, remote.etag, remote.size)
        if self.keep_state and len(parts) > 1:
            # Ranges are written at their own offsets, so the file has holes until it is done.
            # Without a state file a later run would take that sparse file for a sequential
            # prefix (load_parts' fallback) and resume after the holes: record the layout first.
            progress.save()
        resumed = progress.done
        emit(FileStarted(remote.path, remote.size, resumed))
        if resumed:
            emit(BytesReceived(remote.path, resumed))
        fd = open_shared(self.incomplete, os.O_RDWR | os.O_CREAT)
        self.used, self.cancel = set(), threading.Event()
        hasher = PrefixHasher(fd, remote, progress)
        try:
            hasher.start()
            self._fetch_parts(fd, progress)
            digest = hasher.finish()
            if digest != remote.etag:
                return self._mismatch(digest, resumed, progress)
            if self.transfer.fsync:
                os.fsync(fd)
            return commit_blob(fd, self.incomplete, self.blob, remote.size)
        except RangeIgnored as refused:
            hasher.abandon()
            discard(self.incomplete, self.state_path)
            emit(Notice(f"{remote.path}: the server {refused.how}; starting the file over"))
            # Over one connection from byte 0, which needs no Range. A fresh multi-part split
            # would send range requests to the same server again and fail the same way until
            # the restarts ran out (a file big enough to split could never be fetched from it).
            self.whole = True
            return False
        except BaseException:
            hasher.abandon()
            progress.save()
            raise
        finally:
            os.close(fd)

    def _mismatch(self, digest: str, resumed: int, progress: PartsProgress) -> bool:
        remote, emit = self.remote, self.transfer.emit
        discard(self.incomplete, self.state_path)
        if resumed and not self.distrust_partial:
            # The bytes found on disk may be what is wrong (a crash between writes, another
            # tool's partial file): start over once before blaming any endpoint.
            self.distrust_partial = True
            emit(Notice(f"{remote.path}: the resumed download did not verify; starting the file over"))
            return False
        # Nothing is left for a state file to describe, even if what follows raises.
        progress.state_path = None
        if len(self.used) > 1:
            # Ranges came from several endpoints and the hash cannot say whose bytes were
            # wrong: fetch the file whole from one endpoint at a time, so the next mismatch
            # names its culprit instead of excluding good mirrors with the bad one.
            self.whole = True
            emit(Notice(f"{remote.path}: content hash mismatch from several endpoints; fetching it whole from one"))
            return False
        self.ranking.served_bad_bytes(remote.etag, self.used)
        emit(Notice(f"{remote.path}: content hash mismatch from {', '.join(sorted(self.used))}; discarded"))
        culprits = self.ranking.all_served_bad_bytes(remote.etag)
        if culprits:
            # Name every endpoint that served bad bytes, not only the last one tried.
            raise errors.IntegrityError(
                f"{remote.path} failed verification: expected {hash_kind(remote.etag).replace('-', ' ')} {remote.etag}, got {digest} "
                f"(from {', '.join(e.url for e in culprits)}). The bytes were discarded; try another endpoint.")
        return False

    # -- ranges ----------------------------------------------------------------------------
    def _fetch_parts(self, fd: int, progress: PartsProgress) -> None:
        pending = [part for part in progress.parts if not part.complete]
        if not pending:
            return
        failures: list[BaseException] = []

        def run(part: Part) -> None:
            try:
                self._fetch_part(fd, part, progress)
            except BaseException as exc:
                failures.append(exc)
                self.cancel.set()

        helpers = [threading.Thread(target=run, args=(part,), name=f"fetch {self.remote.path}@{part.start}", daemon=True)
                   for part in pending[1:]]
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

    def _check_stop(self) -> None:
        if self.cancel.is_set() or self.transfer.stopped.is_set():
            raise InterruptedError("another range of this file failed, or the pull was interrupted")

    def _fetch_part(self, fd: int, part: Part, progress: PartsProgress) -> None:
        transfer, remote = self.transfer, self.remote

        def attempt(endpoint: Endpoint) -> None:
            with transfer.slots:
                self._stream(endpoint, fd, part, progress)

        def leave(endpoint: Endpoint, reason: str) -> None:
            if len(transfer.endpoints) > 1:  # later files start with an endpoint that works
                transfer.emit(Notice(f"{remote.path}: {endpoint.name} failed ({reason}); trying the next endpoint"))

        def refused(endpoint: Endpoint, answer: DefinitiveAnswer) -> None:
            if answer.status in (401, 403) and len(transfer.endpoints) > 1:
                transfer.emit(Notice(f"{remote.path}: {endpoint.name} refused access (HTTP {answer.status}); trying the next endpoint"))

        if part.complete:
            return
        try:
            fall_back(self.ranking.ordered(etag=remote.etag), attempt, ranking=self.ranking, on_leave=leave,
                      on_answer=refused, delivered=lambda: part.done, pause=self.cancel.wait, check_stop=self._check_stop)
        except AllFailed as failed:
            # An answer such as "gated" on every endpoint: a rerun would not change it, so it is
            # the error itself, never "run the same pull again to resume".
            definitive = failed.definitive()
            if definitive is not None:
                raise definitive from None
            detail = failed.detail or "every endpoint was excluded after a failed verification"
            raise errors.HubError(
                f"could not download {remote.path} from any endpoint ({detail}). What was fetched is kept: "
                "run the same pull again to resume.") from None

    def _stream(self, endpoint: Endpoint, fd: int, part: Part, progress: PartsProgress) -> None:
        transfer, remote = self.transfer, self.remote
        if remote.size == 0 or part.complete:
            return
        use_range = not (part.offset == 0 and part.end == remote.size)
        if use_range and self.ranking.ignores_range(endpoint):
            raise RangeIgnored()
        try:
            response = transfer.client.open_file(
                endpoint, transfer.repo_id, transfer.commit, remote,
                start=part.offset if use_range else 0, end=part.end if use_range else None, repo_type=transfer.repo_type,
            )
        except RangeIgnored:
            self.ranking.saw_range_ignored(endpoint)
            raise
        if response.status == 200 and use_range:
            response.close()
            self.ranking.saw_range_ignored(endpoint)
            raise RangeIgnored()
        self.used.add(endpoint.url)
        view = memoryview(bytearray(BUFFER))
        completed = False
        flushed = part.offset  # where this stream last asked the kernel to start writing to disk
        try:
            while not part.complete:
                self._check_stop()
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
                    except EndpointFailure as slow:  # below the speed floor (retry.Pace)
                        failure = f"{slow.reason}, after {part.offset + count} of {remote.size} bytes"
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
                if part.offset - flushed >= WRITEBACK_EVERY or (part.complete and part.offset > flushed):
                    # (and the tail of every finished part: a pull of many parts smaller than
                    # WRITEBACK_EVERY would otherwise leave all of its bytes to the final fsync)
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
        written = 0
        while written < len(data):
            count = os.pwrite(fd, data[written:], offset + written)
            if not count:  # never for a regular file; a loop that cannot end if it ever were
                raise OSError(errno.EIO, f"could not write {remote.path}")
            written += count
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise errors.DiskSpaceError(
                f"the disk filled up while writing {remote.path}. What was downloaded is kept: free some space "
                "(modelmgr prune) and run the same pull again to resume.") from None
        raise
