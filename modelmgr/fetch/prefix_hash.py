"""Hash a blob while it downloads: the hash follows the file's contiguous prefix from disk (page
cache), in its own thread for large files, so hashing overlaps the transfer instead of
serialising it after the last byte."""
from __future__ import annotations

import errno
import os
import threading

from modelmgr.cache.hashing import new_hasher
from modelmgr.fetch.hub import RemoteFile
from modelmgr.fetch.parts import PartsProgress

BUFFER = 1024 * 1024
# A file in several parts, or one this big, is hashed by a thread following its prefix as it
# grows; a smaller single stream is hashed after its last byte in less time than a thread costs.
HASH_THREAD_FROM = 64 * 1024 * 1024


class PrefixHasher:
    """Hashes the file's contiguous prefix as it grows, reading back what writers put on disk."""

    def __init__(self, fd: int, remote: RemoteFile, progress: PartsProgress):
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
        if len(self.progress.parts) > 1 or self.remote.size >= HASH_THREAD_FROM:
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
