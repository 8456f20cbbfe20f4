"""Distrust the server: every name and hash it sends is checked before it touches a path.

A tree listing is input from the network. A path like ``../../.bashrc`` or an etag like
``../x`` would otherwise become a file outside the cache.
"""
from __future__ import annotations

import re

from modelmgr.errors import UnsafeServerResponse

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")  # used with .match: a prefix
MAX_PATH_LENGTH = 1024


def is_commit(text: object) -> bool:
    """A full git commit: exactly 40 lowercase hex digits (a trailing newline is not one)."""
    return isinstance(text, str) and _HEX40.fullmatch(text) is not None


def is_etag(text: object) -> bool:
    """A blob name: a git blob sha1 (40 hex digits) or an LFS sha256 (64)."""
    return isinstance(text, str) and (_HEX40.fullmatch(text) is not None or _HEX64.fullmatch(text) is not None)


SHA256 = "sha256"
GIT_SHA1 = "git-sha1"


def hash_kind(etag: str) -> str:
    """Which hash an etag is: SHA256 for LFS files (64 hex digits), else GIT_SHA1 (the git blob
    sha1 of 40, which hashes a ``blob {size}\\0`` header before the content)."""
    return SHA256 if len(etag) == 64 else GIT_SHA1


def unsafe_path_reason(path: object) -> str | None:
    """Why ``path`` is no repo-relative POSIX path confined to a snapshot folder; None when it is."""
    if not isinstance(path, str) or not path:
        return "empty or not a string"
    if len(path) > MAX_PATH_LENGTH:
        return "too long"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "control character"
    if "\\" in path:
        return "backslash"
    if path.startswith("/") or _DRIVE.match(path):
        return "absolute path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "empty, '.' or '..' component"
    if parts[0] in (".git", ".modelmgr"):
        return "reserved folder"
    return None


def is_safe_path(path: object) -> bool:
    """The same test for paths read back from disk (manifests, lockfiles), where bad means absent."""
    return unsafe_path_reason(path) is None


def check_remote_path(path: object, *, source: str) -> str:
    """A repo-relative POSIX path with no way out of the snapshot folder."""
    why = unsafe_path_reason(path)
    if why is not None:
        raise UnsafeServerResponse(
            f"{source} sent an unsafe file name {path!r} ({why}); refusing the repository. "
            "The server is misconfigured or hostile: use another endpoint."
        )
    return path  # type: ignore[return-value]


def check_etag(etag: object, *, source: str, path: str = "") -> str:
    if is_etag(etag):
        return etag  # type: ignore[return-value]
    where = f" for {path!r}" if path else ""
    raise UnsafeServerResponse(
        f"{source} sent a malformed etag {etag!r}{where}: expected 40 or 64 lowercase hex digits. Use another endpoint."
    )


def check_commit(commit: object, *, source: str) -> str:
    if is_commit(commit):
        return commit  # type: ignore[return-value]
    raise UnsafeServerResponse(f"{source} sent a malformed commit {commit!r}: expected 40 hex digits. Use another endpoint.")


def check_size(size: object, *, source: str, path: str) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise UnsafeServerResponse(f"{source} sent an invalid size {size!r} for {path!r}. Use another endpoint.")
