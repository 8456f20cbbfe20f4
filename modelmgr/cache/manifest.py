"""What a snapshot is meant to contain, written before the first byte is fetched.

``{repo}/.modelmgr/manifests/{commit}.json`` lists the files a pull intends the snapshot to
have. With it, ``list`` can tell a complete snapshot from one whose pull was interrupted, and
``verify`` knows every expected hash. Snapshots written by other tools simply have none.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelmgr.fsutil import read_small, write_atomic
from modelmgr.project.names import is_etag, is_safe_path
from modelmgr.cache.layout import RepoPaths


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    etag: str


def manifest_path(paths: RepoPaths, commit: str) -> Path:
    return paths.manifest(commit)  # kept for callers; the layout spells it


MAX_BYTES = 64 << 20  # some 300,000 files: far beyond any model repo


def _entry(item: object) -> ManifestEntry:
    """One ``files`` item, or ValueError: every field is checked, since a manifest is read back
    from a cache others can write to (a path of the wrong type once crashed every pull)."""
    if not isinstance(item, dict):
        raise ValueError("not a table")
    path, size, etag = item.get("path"), item.get("size"), item.get("etag")
    if not is_safe_path(path) or not is_etag(etag) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"bad entry {item!r:.80}")
    return ManifestEntry(path, size, etag)


def read_manifest(paths: RepoPaths, commit: str) -> dict[str, ManifestEntry] | None:
    """The manifest, or None when there is none or it is not valid: a bad manifest is treated as
    absent (the scan warns about it; the next pull of that commit writes it anew)."""
    try:
        data = json.loads(read_small(manifest_path(paths, commit), MAX_BYTES))
        files = data["files"] if isinstance(data, dict) else None
        if not isinstance(files, list):
            return None
        return {entry.path: entry for entry in map(_entry, files)}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def write_manifest(paths: RepoPaths, repo_id: str, commit: str, entries: list[ManifestEntry]) -> None:
    """Merge with what an earlier pull of the same commit intended: a file asked for once and
    still missing keeps the snapshot marked incomplete."""
    merged = read_manifest(paths, commit) or {}
    merged.update({entry.path: entry for entry in entries})
    target = manifest_path(paths, commit)
    payload = {
        "repo_id": repo_id,
        "commit": commit,
        "files": [{"path": e.path, "size": e.size, "etag": e.etag} for e in sorted(merged.values(), key=lambda e: e.path)],
    }
    write_atomic(target, json.dumps(payload, indent=1))


def missing_files(paths: RepoPaths, commit: str) -> list[str]:
    """Files the manifest expects that the snapshot lacks ([] when complete or unknown)."""
    manifest = read_manifest(paths, commit)
    if manifest is None:
        return []
    snapshot = paths.snapshot(commit)
    return sorted(path for path in manifest if not os.path.exists(snapshot / path))


def served_from_blob(paths: RepoPaths, commit: str, path: str, etag: str) -> bool | None:
    """Whether ``snapshots/{commit}/{path}`` may be served as blob ``etag``: a link whose target
    is this repo's own ``blobs/{etag}`` (``../../blobs/{etag}`` as huggingface_hub writes it; the
    blob a regular file), or a regular file (a copy, where links are not possible). None when
    nothing is there; False for anything else (a link out of the cache, to another blob, through a
    linked folder...), which must be linked again, never read. Only links are read, no content."""
    snapshot = paths.snapshot(commit)
    link = snapshot / path
    try:
        mode = os.lstat(link).st_mode
    except OSError:
        return None
    folder = link.parent
    while folder != paths.root and folder.is_relative_to(paths.root):
        if folder.is_symlink():  # huggingface_hub's folders are real: relative links would resolve elsewhere
            return False
        folder = folder.parent
    if stat.S_ISREG(mode):
        return True
    if not stat.S_ISLNK(mode):
        return False
    try:
        target = os.readlink(link)
    except OSError:
        return False
    blob = paths.blob(etag)
    if os.path.normpath(os.path.join(link.parent, target)) != os.path.normpath(blob):
        return False
    try:
        return stat.S_ISREG(os.lstat(blob).st_mode)
    except OSError:
        return False


def unsound_files(paths: RepoPaths, commit: str) -> list[str] | None:
    """Files of the snapshot that cannot be served as they are: with a manifest, those it lists
    that are absent or not ``served_from_blob`` at its etag; without one, links that do not point
    at a regular file directly in this repo's ``blobs/``. None when there is no snapshot."""
    snapshot = paths.snapshot(commit)
    if not snapshot.is_dir():
        return None
    manifest = read_manifest(paths, commit)
    if manifest is not None:
        return sorted(path for path, entry in manifest.items() if not served_from_blob(paths, commit, path, entry.etag))
    bad = []
    blobs = os.path.normpath(paths.blobs)
    for folder, _, files in os.walk(snapshot):  # links to folders are no files (as the scan sees them)
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                continue
            relative = os.path.relpath(full, snapshot).replace(os.sep, "/")
            try:
                first = os.path.normpath(os.path.join(folder, os.readlink(full)))
            except OSError:
                first = ""
            etag = os.path.basename(first)
            if os.path.dirname(first) != blobs or not is_etag(etag):
                bad.append(relative)
            elif os.path.lexists(first) and not served_from_blob(paths, commit, relative, etag):
                bad.append(relative)  # a blob that is itself a link (a missing one is as before: no manifest, no check)
    return sorted(bad)
