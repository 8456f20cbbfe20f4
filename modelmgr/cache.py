"""huggingface_hub's cache layout, scanned into frozen dataclasses.

The scan is what ``modelmgr list``, ``du`` and ``rm`` stand on, so it is written for speed: one
``os.scandir`` per folder, one ``readlink`` per snapshot file and one ``stat`` per distinct blob,
plain strings below the revision level, and nothing heavier than the standard library imported.

Sizes follow ``huggingface_hub.scan_cache_dir`` exactly: a snapshot file's blob is the first hop of
its symlink (a regular file in a snapshot is its own blob), and a revision's size is the sum of its
distinct blobs. Where huggingface_hub gives up on a whole repo (a broken link, a dangling ref), this
scan records a warning and keeps everything else.

modelmgr's pull writes ``{repo}/.modelmgr/manifests/{commit}.json`` listing the files a snapshot is
meant to hold; a revision whose manifest names a file the snapshot lacks is *incomplete*. Without a
manifest (any cache huggingface_hub filled) a revision is complete as far as anyone can tell, unless
one of its links is broken.
"""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .layout import INCOMPLETE_SUFFIX, folder_name, parse_folder_name
from .units import format_age, format_size

MODELMGR_DIR = ".modelmgr"
MANIFESTS_DIR = "manifests"
MANIFEST_SUFFIX = ".json"
SHORT_COMMIT = 8

# What operating systems drop into folders; huggingface_hub ignores the same names.
_OS_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# Top-level entries of a cache that belong to huggingface_hub and are not repos: its lock folder,
# its cache tag, its cache-wide shared blob store and the layout version file older releases wrote.
_NOT_REPOS = frozenset({".locks", "CACHEDIR.TAG", "blobs", "version.txt", *_OS_FILES})
# Repo kinds huggingface_hub caches but modelmgr does not administer: skipped without a warning.
_FOREIGN_KINDS = ("kernels--",)

# Where a blob lives, which decides what removing it may touch.
IN_BLOBS = "blobs"  # an entry of the repo's blobs/ folder (the normal case)
IN_SNAPSHOT = "snapshot"  # a regular file inside a snapshot (a copy, not a link)
OUTSIDE = "outside"  # a link target outside the repo's blobs/: counted, never deleted


def manifest_path(repo_path: str | os.PathLike, commit: str) -> Path:
    """``{repo}/.modelmgr/manifests/{commit}.json``, written by modelmgr's pull."""
    return Path(repo_path, MODELMGR_DIR, MANIFESTS_DIR, commit + MANIFEST_SUFFIX)


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
    files: tuple[CachedFile, ...]
    snapshot_path: Path
    last_modified: float
    incomplete: bool = False  # a manifest names files the snapshot lacks, or a link is broken
    missing: tuple[str, ...] = ()  # those files, '/'-separated, relative to the snapshot

    @property
    def nb_files(self) -> int:
        return len(self.files)

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
    path: Path
    cache_dir: Path
    read_only: bool  # lives in one of the extra, read-only cache directories
    size_on_disk: int  # its distinct blobs, each counted once
    revisions: tuple[CachedRevision, ...]
    last_modified: float
    last_accessed: float
    nb_files: int  # distinct blobs, as huggingface_hub counts them
    blobs: tuple[CachedBlob, ...]
    incomplete_blobs: tuple[tuple[str, int], ...] = ()  # (path, size) of partial downloads in blobs/
    unreferenced_blobs: tuple[tuple[str, int], ...] = ()  # (path, size) of blobs no snapshot points to

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


@dataclass(frozen=True)
class CacheInfo:
    repos: tuple[CachedRepo, ...]
    warnings: tuple[str, ...]
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
        """Every copy of a repo, writable cache first. IDs compare case-insensitively, as on the Hub."""
        wanted = repo_id.lower()
        return [repo for repo in self.repos if repo.repo_type == repo_type and repo.repo_id.lower() == wanted]


def unique_size(repos: Iterable[CachedRepo]) -> int:
    """Bytes on disk for these repos together: content shared between them is counted once."""
    seen: dict[tuple[int, int], int] = {}
    for repo in repos:
        for blob in repo.blobs:
            seen[blob.inode] = blob.size
    return sum(seen.values())


def scan_cache(cache_dirs: Sequence[str | os.PathLike] | str | os.PathLike) -> CacheInfo:
    """Scan every cache directory, in order; the first is writable, the others read-only extras.

    Never raises for what it finds on disk: every problem becomes a line in ``warnings``.
    """
    if isinstance(cache_dirs, (str, os.PathLike)):
        cache_dirs = [cache_dirs]
    dirs = tuple(Path(os.path.abspath(os.path.expanduser(os.fspath(d)))) for d in cache_dirs)
    warnings: list[str] = []
    repos: list[CachedRepo] = []
    for index, cache_dir in enumerate(dirs):
        repos.extend(_scan_one_cache(cache_dir, read_only=index > 0, warn=warnings.append))
    total = unique_size(repos)
    return CacheInfo(repos=tuple(repos), warnings=tuple(warnings), size_on_disk=total, cache_dirs=dirs)


def _scan_one_cache(cache_dir: Path, *, read_only: bool, warn: Callable[[str], None]) -> list[CachedRepo]:
    root = str(cache_dir)
    try:
        with os.scandir(root) as iterator:
            entries = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        if read_only:
            warn(f"cache directory {root} (listed in cache.dirs) does not exist; skipped.")
        return []  # the writable cache simply has nothing yet
    except NotADirectoryError:
        warn(f"cache directory {root} is a file, not a folder; skipped. Point the cache setting at a folder.")
        return []
    except OSError as exc:
        warn(f"cannot read cache directory {root}: {exc.strerror}; skipped.")
        return []
    repos = []
    for entry in entries:
        name = entry.name
        if name in _NOT_REPOS or name.startswith(".") or name.startswith(_FOREIGN_KINDS):
            continue
        parsed = parse_folder_name(name)
        if parsed is None:
            warn(f"{entry.path}: not a model, dataset or space folder (expected models--org--name); ignored.")
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            warn(f"{entry.path}: a file where a repo folder was expected; ignored.")
            continue
        repo_type, repo_id = parsed
        repo = _scan_repo(entry.path, repo_type, repo_id, cache_dir, read_only, warn)
        if repo is not None:
            repos.append(repo)
    return repos


def _list_dir(path: str, warn: Callable[[str], None]) -> list[os.DirEntry] | None:
    try:
        with os.scandir(path) as iterator:
            return list(iterator)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn(f"cannot read {path}: {exc.strerror}; skipped.")
        return None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _read_refs(refs_dir: str, warn: Callable[[str], None]) -> dict[str, set[str]]:
    """commit -> names of the refs pointing at it (``main``, ``v1.0``, ``refs/pr/1``)."""
    by_commit: dict[str, set[str]] = {}
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in _list_dir(folder, warn) or ():
            name = prefix + entry.name
            if _is_dir(entry):
                stack.append((entry.path, name + "/"))
                continue
            if entry.name in _OS_FILES:
                continue
            try:
                with open(entry.path, encoding="utf-8", errors="replace") as handle:
                    commit = handle.read().strip()
            except OSError as exc:
                warn(f"cannot read ref {entry.path}: {exc.strerror}; ignored.")
                continue
            if not commit:
                warn(f"ref {entry.path} is empty; ignored.")
                continue
            by_commit.setdefault(commit, set()).add(name)
    return by_commit


def _read_manifests(repo_path: str, warn: Callable[[str], None]) -> dict[str, tuple[list[str], float]]:
    """commit -> (paths the manifest lists, the manifest's mtime)."""
    folder = os.path.join(repo_path, MODELMGR_DIR, MANIFESTS_DIR)
    manifests: dict[str, tuple[list[str], float]] = {}
    for entry in _list_dir(folder, warn) or ():
        if not entry.name.endswith(MANIFEST_SUFFIX):
            continue
        commit = entry.name[: -len(MANIFEST_SUFFIX)]
        import json  # only caches modelmgr pulled into pay for it

        try:
            with open(entry.path, encoding="utf-8") as handle:
                document = json.load(handle)
            paths = [item["path"] for item in document["files"]]
            if not all(isinstance(path, str) for path in paths):
                raise TypeError
            mtime = entry.stat().st_mtime
        except OSError as exc:
            warn(f"cannot read manifest {entry.path}: {exc.strerror}; ignored.")
            continue
        except (ValueError, KeyError, TypeError):
            warn(f"manifest {entry.path} is not valid (expected {{\"files\": [{{\"path\": ...}}, ...]}}); ignored.")
            continue
        if document.get("commit", commit) != commit:
            warn(f"manifest {entry.path} names commit {document.get('commit')!r}, not its file name; trusting the file name.")
        manifests[commit] = (paths, mtime)
    return manifests


def _snapshot_files(top: str, warn: Callable[[str], None]) -> Iterator[tuple[str, os.DirEntry]]:
    """(relative path, entry) of everything in a snapshot that is not a real folder.

    Links to folders come out too (the caller drops them after its stat, as huggingface_hub's
    ``is_dir()`` does); they are never descended into.
    """
    cut = len(top) + 1
    stack = [top]
    while stack:
        folder = stack.pop()
        for entry in _list_dir(folder, warn) or ():
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            if real_dir:
                stack.append(entry.path)
            else:
                relative = entry.path[cut:]
                yield (relative if os.sep == "/" else relative.replace(os.sep, "/")), entry


def _scan_repo(
    repo_path: str, repo_type: str, repo_id: str, cache_dir: Path, read_only: bool, warn: Callable[[str], None]
) -> CachedRepo | None:
    children = _list_dir(repo_path, warn)
    if children is None:
        return None
    names = {entry.name: entry for entry in children}
    blobs_dir = os.path.join(repo_path, "blobs")
    blobs_prefix = blobs_dir + os.sep

    # blobs/: partial downloads apart; the others are looked up by name when snapshots point at them.
    blob_entries: dict[str, os.DirEntry] = {}
    incomplete_blobs: list[tuple[str, int]] = []
    if "blobs" in names:
        for entry in _list_dir(blobs_dir, warn) or ():
            if entry.name.endswith(INCOMPLETE_SUFFIX):
                try:
                    incomplete_blobs.append((entry.path, entry.stat().st_size))
                except OSError:
                    pass
            else:
                blob_entries[entry.name] = entry

    refs_by_commit: dict[str, set[str]] = {}
    if "refs" in names:
        if _is_dir(names["refs"]):
            refs_by_commit = _read_refs(names["refs"].path, warn)
        else:
            warn(f"{names['refs'].path} is a file, not a folder; refs ignored.")
    manifests = _read_manifests(repo_path, warn) if MODELMGR_DIR in names else {}

    # blob path -> (size, atime, mtime, where, is_link, inode); None for a path that cannot be stat'ed
    blob_info: dict[str, tuple | None] = {}

    def blob_stat(path: str, entry: os.DirEntry | None) -> tuple | None:
        if path in blob_info:
            return blob_info[path]
        is_link = False
        if entry is not None:  # a regular file inside the snapshot
            where = IN_SNAPSHOT
        elif path.startswith(blobs_prefix) and path.find(os.sep, len(blobs_prefix)) < 0:
            where = IN_BLOBS
            entry = blob_entries.get(path[len(blobs_prefix):])
            if entry is None:  # blobs/ does not list it: missing
                blob_info[path] = None
                return None
            is_link = entry.is_symlink()
        else:
            where = OUTSIDE
        try:
            result = entry.stat() if entry is not None else os.stat(path)
        except OSError:
            blob_info[path] = None
            return None
        if stat.S_ISDIR(result.st_mode):
            info = ("dir",)
        else:
            info = (result.st_size, result.st_atime, result.st_mtime, where, is_link, (result.st_dev, result.st_ino))
        blob_info[path] = info
        return info

    revisions: list[CachedRevision] = []
    snapshots_dir = os.path.join(repo_path, "snapshots")
    snapshot_entries = _list_dir(snapshots_dir, warn) if "snapshots" in names else None
    if snapshot_entries is None and not manifests and not incomplete_blobs:
        if "snapshots" not in names:
            warn(f"{repo_path} has no snapshots/ folder; it holds no usable revision.")
    seen_commits: set[str] = set()
    for snapshot in sorted(snapshot_entries or (), key=lambda entry: entry.name):
        commit = snapshot.name
        if commit in _OS_FILES:
            continue
        if snapshot.is_symlink() or not _is_dir(snapshot):
            kind = "a link" if snapshot.is_symlink() else "a file"
            warn(f"{snapshot.path} is {kind}, not a snapshot folder; ignored.")
            continue
        files: list[CachedFile] = []
        blob_paths: set[str] = set()
        missing: list[str] = []
        copies = 0
        top = snapshot.path
        for relative, entry in _snapshot_files(top, warn):
            if entry.name in _OS_FILES:
                continue
            if entry.is_symlink():
                try:
                    target = os.readlink(entry.path)
                except OSError as exc:
                    warn(f"cannot read link {entry.path}: {exc.strerror}; skipped.")
                    continue
                blob = os.path.normpath(os.path.join(os.path.dirname(entry.path), target))
                info = blob_stat(blob, None)
                if info is None:
                    warn(f"broken link {entry.path} -> {target}: its blob is missing. Pull the model again to repair it.")
                    missing.append(relative)
                    continue
            else:
                blob = entry.path
                info = blob_stat(blob, entry)
                if info is None:
                    warn(f"cannot stat {entry.path}; skipped.")
                    continue
                copies += len(info) > 1
            if len(info) == 1:  # a link to a folder: not a file, as huggingface_hub sees it
                continue
            etag = blob[len(blobs_prefix):] if info[3] == IN_BLOBS else None
            files.append(CachedFile(relative, blob, info[0], etag))
            blob_paths.add(blob)
        if copies:
            warn(
                f"{top} holds {copies} regular file(s) instead of links into blobs/; they count towards its size "
                "and go with the snapshot when it is removed."
            )
        if commit in manifests:
            known = {file.path for file in files}
            known.update(missing)
            missing.extend(path for path in manifests[commit][0] if path not in known)
        if blob_paths:
            last_modified = max(blob_info[path][2] for path in blob_paths)  # type: ignore[index]
        else:
            try:
                last_modified = snapshot.stat().st_mtime
            except OSError:
                last_modified = 0.0
        seen_commits.add(commit)
        revisions.append(
            CachedRevision(
                commit=commit,
                refs=frozenset(refs_by_commit.get(commit, ())),
                size_on_disk=sum(blob_info[path][0] for path in blob_paths),  # type: ignore[index]
                files=tuple(sorted(files, key=lambda file: file.path)),
                snapshot_path=Path(top),
                last_modified=last_modified,
                incomplete=bool(missing),
                missing=tuple(missing),
            )
        )

    # A pull that wrote its manifest but no snapshot yet: a revision with everything missing.
    for commit, (paths, mtime) in sorted(manifests.items()):
        if commit not in seen_commits:
            seen_commits.add(commit)
            revisions.append(
                CachedRevision(
                    commit=commit,
                    refs=frozenset(refs_by_commit.get(commit, ())),
                    size_on_disk=0,
                    files=(),
                    snapshot_path=Path(snapshots_dir, commit),
                    last_modified=mtime,
                    incomplete=True,
                    missing=tuple(paths),
                )
            )
    for commit, ref_names in refs_by_commit.items():
        if commit not in seen_commits:
            for ref in sorted(ref_names):
                warn(f"ref {ref!r} of {repo_path} points to commit {commit[:40]!r}, which has no snapshot; ignored.")

    blobs = tuple(
        CachedBlob(path, info[0], info[1], info[2], info[3], info[4], info[5])
        for path, info in blob_info.items()
        if info is not None and len(info) > 1
    )
    linked = {blob.path for blob in blobs}
    unreferenced = []
    for name, entry in blob_entries.items():
        if entry.path not in linked and name not in _OS_FILES:
            try:
                unreferenced.append((entry.path, entry.stat(follow_symlinks=False).st_size))
            except OSError:
                pass
    if blobs:
        last_accessed = max(blob.last_accessed for blob in blobs)
        last_modified = max(blob.last_modified for blob in blobs)
    else:
        try:
            own = os.stat(repo_path)
            last_accessed, last_modified = own.st_atime, own.st_mtime
        except OSError:
            last_accessed = last_modified = 0.0
    return CachedRepo(
        repo_id=repo_id,
        repo_type=repo_type,
        path=Path(repo_path),
        cache_dir=cache_dir,
        read_only=read_only,
        size_on_disk=sum(blob.size for blob in blobs),
        revisions=tuple(revisions),
        last_modified=last_modified,
        last_accessed=last_accessed,
        nb_files=len(blobs),
        blobs=blobs,
        incomplete_blobs=tuple(sorted(incomplete_blobs)),
        unreferenced_blobs=tuple(sorted(unreferenced)),
    )
