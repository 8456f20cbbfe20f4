"""The cache as data: frozen dataclasses for repos, revisions, files and blobs, and the scan's warnings.

Sizes follow ``huggingface_hub.scan_cache_dir`` exactly: a snapshot file's blob is the first hop of
its symlink (a regular file in a snapshot is its own blob), and a revision's size is the sum of its
distinct blobs. What only removal needs (each file's blob path, the partial downloads in
``blobs/``) is read when first asked for, not during the scan (``scan.py``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

from modelmgr.cache.layout import BLOBS, folder_name, partial_download
from modelmgr.cache.walk import ATIME, KEY, LINK, MTIME, PATH, REL, SIZE, first_hop, ignore, scan_snapshot
from modelmgr.units import format_age, format_size

SHORT_COMMIT = 8

# Where a blob lives, which decides what removing it may touch.
IN_BLOBS = "blobs"  # an entry of the repo's blobs/ folder (the normal case)
IN_SNAPSHOT = "snapshot"  # a regular file inside a snapshot (a copy, not a link)
OUTSIDE = "outside"  # a link target outside the repo's blobs/: counted, never deleted


@dataclass(frozen=True)
class ScanWarning:
    """Something the scan could not use, and the path it is about: commands that act on some
    repos show only the warnings under those repos' folders (``about``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return self.message

    def about(self, folder: str | os.PathLike) -> bool:
        folder = os.fspath(folder)
        return self.path == folder or self.path.startswith(folder.rstrip(os.sep) + os.sep)


def _ago(timestamp: float) -> str:
    return format_age(time.time() - timestamp)


@dataclass(frozen=True)
class CachedFile:
    """One file of a snapshot. Paths are strings: a cache holds many of these."""

    path: str  # relative to the snapshot, '/'-separated
    blob_path: str  # the link's first hop, as huggingface_hub reports it; the file itself if it is no link
    size: int
    etag: str | None  # the blob's name in blobs/; None when the file does not point into blobs/


@dataclass(frozen=True)
class CachedBlob:
    """A distinct blob that at least one snapshot of the repo points to."""

    path: str
    size: int
    last_accessed: float
    last_modified: float
    where: str  # IN_BLOBS, IN_SNAPSHOT or OUTSIDE
    is_link: bool  # a blobs/ entry that is itself a link (huggingface_hub's shared store): unlinking frees nothing
    inode: tuple[int, int]  # (st_dev, st_ino), to count content shared across repos or caches once


@dataclass(frozen=True)
class CachedRevision:
    commit: str
    refs: frozenset[str]
    size_on_disk: int  # the sum of the distinct blobs its files point to, as huggingface_hub computes it
    snapshot_dir: str  # a string: a Path per revision is a tenth of what scanning a large cache costs
    last_modified: float
    nb_files: int
    incomplete: bool = False  # a manifest names files the snapshot lacks, or a link is broken
    missing: tuple[str, ...] = ()  # those files, '/'-separated, relative to the snapshot
    scanned: tuple | None = field(default=None, repr=False, compare=False)  # the scan's raw entries, if kept
    # What `list` shows of the weights without reading the snapshot again (the scan index keeps it):
    # "safetensors", "gguf", "pickle" or None, and for GGUF the top-level .gguf file names.
    weight_format: str | None = None
    gguf_files: tuple[str, ...] = ()

    @cached_property
    def snapshot_path(self) -> Path:
        return Path(self.snapshot_dir)

    @cached_property
    def entries(self) -> tuple:
        """Raw ``(relative, path, is_link, size, inode, atime, mtime)`` of every file; read again
        from disk when the revision came from the scan index."""
        if self.scanned is not None:
            return self.scanned
        return tuple(scan_snapshot(self.snapshot_dir, ignore)[0])

    @cached_property
    def files(self) -> tuple[CachedFile, ...]:
        """Every file, sorted by path, with its blob (links are read now, not during the scan)."""
        blobs_prefix = os.path.join(os.path.dirname(os.path.dirname(self.snapshot_path)), BLOBS) + os.sep
        files = []
        for entry in sorted(self.entries):
            blob = first_hop(entry[PATH], entry[LINK])
            etag = blob[len(blobs_prefix):] if entry[LINK] and blob.startswith(blobs_prefix) else None
            files.append(CachedFile(entry[REL], blob, entry[SIZE], etag if etag and os.sep not in etag else None))
        return tuple(files)

    @property
    def short_commit(self) -> str:
        return self.commit[:SHORT_COMMIT]

    @property
    def sorted_refs(self) -> list[str]:
        return sorted(self.refs)

    @property
    def label(self) -> str:
        """``a1b2c3d4 (main, v1.0)``."""
        return f"{self.short_commit} ({', '.join(self.sorted_refs)})" if self.refs else self.short_commit

    @property
    def size_str(self) -> str:
        return format_size(self.size_on_disk)

    @property
    def last_modified_str(self) -> str:
        return _ago(self.last_modified)


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    repo_type: str  # "model", "dataset" or "space"
    folder: str  # the repo folder, as a string for the same reason as CachedRevision.snapshot_dir
    cache_dir: Path
    read_only: bool  # lives in one of the extra, read-only cache directories
    size_on_disk: int  # its distinct blobs, each counted once
    revisions: tuple[CachedRevision, ...]
    last_modified: float
    last_accessed: float
    nb_files: int  # distinct blobs, as huggingface_hub counts them
    content: dict = field(default_factory=dict, repr=False, compare=False)  # (st_dev, st_ino) -> size

    @cached_property
    def path(self) -> Path:
        return Path(self.folder)

    def identity(self) -> dict[str, str]:
        """What JSON reports (rm, verify, prune) say to name the repo and where it lives."""
        return {"id": self.display_id, "repo_id": self.repo_id, "repo_type": self.repo_type, "cache_dir": str(self.cache_dir)}

    @property
    def display_id(self) -> str:
        """``org/name`` for a model, ``dataset:org/name`` or ``space:org/name`` otherwise."""
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}:{self.repo_id}"

    @property
    def folder_name(self) -> str:
        return folder_name(self.repo_id, self.repo_type)

    @property
    def refs(self) -> dict[str, CachedRevision]:
        return {ref: revision for revision in self.revisions for ref in revision.refs}

    @property
    def size_str(self) -> str:
        return format_size(self.size_on_disk)

    @property
    def last_modified_str(self) -> str:
        return _ago(self.last_modified)

    @property
    def last_accessed_str(self) -> str:
        return _ago(self.last_accessed)

    @property
    def incomplete(self) -> bool:
        return any(revision.incomplete for revision in self.revisions)

    @cached_property
    def blobs(self) -> tuple[CachedBlob, ...]:
        """The distinct blobs the snapshots point to, with where each lives."""
        blobs_dir = str(self.path / BLOBS)
        found: dict[str, CachedBlob] = {}
        for revision in self.revisions:
            for file, entry in zip(revision.files, sorted(revision.entries)):
                if file.blob_path in found:
                    continue
                if not entry[LINK]:
                    where, is_link = IN_SNAPSHOT, False
                elif os.path.dirname(file.blob_path) == blobs_dir:
                    where, is_link = IN_BLOBS, os.path.islink(file.blob_path)
                else:
                    where, is_link = OUTSIDE, False
                found[file.blob_path] = CachedBlob(
                    file.blob_path, entry[SIZE], entry[ATIME], entry[MTIME], where, is_link, entry[KEY]
                )
        return tuple(found.values())

    @cached_property
    def _blobs_folder(self) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
        """(partial downloads, every other entry) of blobs/, as (path, size), sorted."""
        incomplete, others = [], []
        try:
            with os.scandir(self.path / BLOBS) as iterator:
                for entry in iterator:
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    (incomplete if partial_download(entry.name) is not None else others).append((entry.path, size))
        except OSError:
            pass
        return tuple(sorted(incomplete)), tuple(sorted(others))

    @property
    def incomplete_blobs(self) -> tuple[tuple[str, int], ...]:
        """(path, size) of partial downloads: modelmgr's and huggingface_hub's ``.incomplete`` files
        and blobs a killed pull had verified but not renamed (``layout.partial_download``). Never
        counted in sizes. (The snapshots are not read again for these: ``du`` asks for them of
        every repo.)"""
        return self._blobs_folder[0]

    @cached_property
    def unreferenced_blobs(self) -> tuple[tuple[str, int], ...]:
        """(path, size) of the entries in blobs/ that no snapshot points to."""
        linked = {blob.path for blob in self.blobs}
        return tuple(item for item in self._blobs_folder[1] if item[0] not in linked)


@dataclass(frozen=True)
class CacheInfo:
    repos: tuple[CachedRepo, ...]
    warnings: tuple[ScanWarning, ...]
    size_on_disk: int  # every blob once, across repos and cache directories
    cache_dirs: tuple[Path, ...]

    @property
    def size_str(self) -> str:
        return format_size(self.size_on_disk)

    @property
    def revisions(self) -> Iterator[tuple[CachedRepo, CachedRevision]]:
        for repo in self.repos:
            for revision in repo.revisions:
                yield repo, revision

    def find(self, repo_id: str, repo_type: str = "model") -> list[CachedRepo]:
        """Every copy of a repo, writable cache first. IDs compare case-insensitively, as on the Hub,
        but a folder spelled exactly as asked wins: ``models--Tiny-Org--Tiny`` is never what
        ``tiny-org/tiny`` means when ``models--tiny-org--tiny`` is there too. Where only other
        spellings exist, several of them in one cache are ambiguous (``removal`` refuses them)."""
        wanted = repo_id.lower()
        found = [repo for repo in self.repos if repo.repo_type == repo_type and repo.repo_id.lower() == wanted]
        exact = [repo for repo in found if repo.repo_id == repo_id]
        return exact or found


def plain_repo(repo: CachedRepo) -> tuple:
    """A repo as plain data that ``marshal`` carries (from a scan helper process), without its
    revisions' raw entries: ``CachedRevision.entries`` reads those again if ever asked for, as
    for a repo served by the scan index."""
    revisions = tuple(tuple(None if name == "scanned" else getattr(revision, name) for name in _REVISION_FIELDS)
                      for revision in repo.revisions)
    return tuple(revisions if name == "revisions" else str(repo.cache_dir) if name == "cache_dir" else getattr(repo, name)
                 for name in _REPO_FIELDS)


def repo_from_plain(data: tuple) -> CachedRepo:
    """The inverse of ``plain_repo``; TypeError, ValueError or IndexError for anything else."""
    if len(data) != len(_REPO_FIELDS) or any(len(revision) != len(_REVISION_FIELDS) for revision in data[_REVISIONS]):
        raise ValueError("not a plain repo")
    values = list(data)
    values[_CACHE_DIR] = Path(values[_CACHE_DIR])
    values[_REVISIONS] = tuple(CachedRevision(*revision) for revision in values[_REVISIONS])
    return CachedRepo(*values)


# Field order, as the dataclasses declare them (and so as their __init__ takes them).
_REPO_FIELDS = tuple(item.name for item in fields(CachedRepo))
_REVISION_FIELDS = tuple(item.name for item in fields(CachedRevision))
_CACHE_DIR, _REVISIONS = _REPO_FIELDS.index("cache_dir"), _REPO_FIELDS.index("revisions")


def unique_size(repos: Iterable[CachedRepo]) -> int:
    """Bytes on disk for these repos together: content shared between them is counted once."""
    seen: dict[tuple[int, int], int] = {}
    for repo in repos:
        seen.update(repo.content)
    return sum(seen.values())


PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def weights_summary(relative_names) -> tuple[str | None, tuple[str, ...]]:
    """The weight format of a snapshot from its files' relative names, and its top-level GGUF files:
    safetensors win (a repo with both loads those), then GGUF, then pickles."""
    gguf: list[str] = []
    pickles = False
    for name in relative_names:  # one pass, ended by the first safetensors file (the common case)
        if "/" in name:
            continue
        if name.endswith(".safetensors"):
            return "safetensors", ()
        if name.lower().endswith(".gguf"):
            gguf.append(name)
        elif name.endswith(PICKLE_SUFFIXES):
            pickles = True
    if gguf:
        return "gguf", tuple(sorted(gguf))
    return ("pickle" if pickles else None), ()
