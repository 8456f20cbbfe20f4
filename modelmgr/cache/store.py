"""Giving a downloaded, verified blob its final name in the cache.

Blobs are content-addressed and written under ``blobs/{etag}.incomplete``; only a file whose
hash was checked is renamed to ``blobs/{etag}``. The rename makes sure the name holds the very
file that was verified, even where the inter-process lock did not hold (some NFS mounts).
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

from modelmgr.fsutil import open_shared


def blob_present(blob: Path, size: int) -> bool:
    """A committed blob: a regular file of the right size. A link planted under the blob's name
    is not one (its target lies anywhere); the commit of the real blob renames over the link."""
    try:
        found = os.lstat(blob)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size == size


def start_afresh(path: Path) -> None:
    """Drop a partial file by unlinking it, never by truncating: a second writer that still has it
    open (where the lock did not hold) keeps writing into its own inode, not into ours."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def discard(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def commit_blob(fd: int, incomplete: Path, blob: Path, size: int) -> bool:
    """Give the verified file open as ``fd`` (named ``incomplete``) its final name ``blob``.

    Renaming by path alone could commit another writer's half-written file that replaced ours
    under the same name (possible only where the lock did not hold). When our verified file has
    lost its name that way, its bytes are copied out under a private name and committed.
    """
    private = incomplete.with_name(f"{incomplete.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(incomplete, private)
    except FileNotFoundError:
        return blob_present(blob, size) or _commit_copy(fd, private, blob, size)
    ours = os.fstat(fd)
    theirs = os.stat(private)
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        try:
            os.rename(private, incomplete)  # not ours: give it back to whoever is writing it
        except OSError:
            start_afresh(private)
        return blob_present(blob, size) or _commit_copy(fd, private, blob, size)
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
        start_afresh(private)
        raise
    os.close(out)
    os.replace(private, blob)
    return True
