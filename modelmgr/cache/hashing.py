"""Content hashes as the Hub names blobs: sha256 for LFS files, the git blob sha1 otherwise."""
from __future__ import annotations

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
    hasher = new_hasher(etag, size)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()
