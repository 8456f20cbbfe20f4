"""Distrust the server: every name and hash it sends is checked before it touches a path.

A tree listing is input from the network. A path like ``../../.bashrc`` or an etag like
``../x`` would otherwise become a file outside the cache.
"""
from __future__ import annotations

import re

from modelmgr.errors import UnsafeServerResponse

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_PATH_LENGTH = 1024


def check_remote_path(path: object, *, source: str) -> str:
    """A repo-relative POSIX path with no way out of the snapshot folder."""

    def refuse(why: str) -> UnsafeServerResponse:
        return UnsafeServerResponse(
            f"{source} sent an unsafe file name {path!r} ({why}); refusing the repository. "
            "The server is misconfigured or hostile: use another endpoint."
        )

    if not isinstance(path, str) or not path:
        raise refuse("empty or not a string")
    if len(path) > MAX_PATH_LENGTH:
        raise refuse("too long")
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise refuse("control character")
    if "\\" in path:
        raise refuse("backslash")
    if path.startswith("/") or _DRIVE.match(path):
        raise refuse("absolute path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise refuse("empty, '.' or '..' component")
    if parts[0] in (".git", ".modelmgr"):
        raise refuse("reserved folder")
    return path


def check_etag(etag: object, *, source: str, path: str = "") -> str:
    if isinstance(etag, str) and (_HEX40.match(etag) or _HEX64.match(etag)):
        return etag
    where = f" for {path!r}" if path else ""
    raise UnsafeServerResponse(
        f"{source} sent a malformed etag {etag!r}{where}: expected 40 or 64 lowercase hex digits. Use another endpoint."
    )


def check_commit(commit: object, *, source: str) -> str:
    if isinstance(commit, str) and _HEX40.match(commit):
        return commit
    raise UnsafeServerResponse(f"{source} sent a malformed commit {commit!r}: expected 40 hex digits. Use another endpoint.")


def check_size(size: object, *, source: str, path: str) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise UnsafeServerResponse(f"{source} sent an invalid size {size!r} for {path!r}. Use another endpoint.")
