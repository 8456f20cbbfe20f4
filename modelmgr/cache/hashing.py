"""Content hashes as the Hub names blobs: sha256 for LFS files, the git blob sha1 otherwise."""
from __future__ import annotations

import errno
import hashlib

from modelmgr.project.names import SHA256, hash_kind


def new_hasher(etag: str, size: int):
    """A hashlib object whose hexdigest() equals ``etag`` for the right content."""
    if hash_kind(etag) == SHA256:
        return hashlib.sha256()
    hasher = hashlib.sha1()
    hasher.update(b"blob %d\0" % size)  # git hashes a header before the content
    return hasher


def hash_file(path, etag: str, size: int, *, chunk: int = 8 * 1024 * 1024) -> str:
    """The hash of a file's content. A blob's name may lead (through a link, in a cache others
    write to) to a FIFO or a device: only a regular file is read, and opening never blocks."""
    import os
    import stat

    hasher = new_hasher(etag, size)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        while block := handle.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()
