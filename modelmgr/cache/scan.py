"""huggingface_hub's cache layout, scanned into frozen dataclasses.

The scan is what ``modelmgr list``, ``du`` and ``rm`` stand on, so it is written for speed: one
``os.scandir`` per folder and one ``stat`` per snapshot file, plain strings and tuples below the
revision level, and nothing heavier than the standard library imported. What only removal needs
(each file's blob path, the partial downloads in ``blobs/``) is read when first asked for.

Sizes follow ``huggingface_hub.scan_cache_dir`` exactly: a snapshot file's blob is the first hop of
its symlink (a regular file in a snapshot is its own blob), and a revision's size is the sum of its
distinct blobs. The scan tells blobs apart by inode and reads links only where two files share one
(so a hard-linked duplicate counts twice, as huggingface_hub counts it). Where huggingface_hub gives
up on a whole repo (a broken link, a dangling ref), this scan records a warning and keeps the rest.

modelmgr's pull writes ``{repo}/.modelmgr/manifests/{commit}.json`` listing the files a snapshot is
meant to hold; a revision whose manifest names a file the snapshot lacks is *incomplete*. Without a
manifest (any cache huggingface_hub filled) a revision is complete as far as anyone can tell, unless
one of its links is broken.

``scan_cache(..., reuse=True)`` (what ``list`` and ``du`` use) keeps a scan index outside the cache,
in ``$XDG_CACHE_HOME/modelmgr/scan-index/``, as git keeps its index: a repo whose folders all still
carry the same mtime, ctime, inode and size as when it was scanned is taken from the index instead
of being read file by file. Only repos whose files are all plain blobs in their own ``blobs/`` and
that scanned without a warning are indexed, and only once their folders are a few seconds old, so a
change made within the same clock tick as a scan cannot hide. What the index cannot see is a blob
rewritten in place (huggingface_hub never does that; ``modelmgr verify`` would catch it) and blob
access times, which it keeps from the scan. ``MODELMGR_SCAN_INDEX=0`` turns it off.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from modelmgr.cache.layout import INCOMPLETE_SUFFIX, folder_name, parse_folder_name
from modelmgr.units import format_age, format_size

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

# A scanned snapshot file: (relative path, absolute path, is a link, size, (st_dev, st_ino), atime, mtime)
_REL, _PATH, _LINK, _SIZE, _KEY, _ATIME, _MTIME = range(7)

INDEX_VERSION = 1
# Folders changed less than this long before a scan are not indexed: a second change within the
# same timestamp tick would leave their stamps equal (git's "racy clean" problem).
RACY_SECONDS = 2.0


def manifest_path(repo_path: str | os.PathLike, commit: str) -> Path:
    """``{repo}/.modelmgr/manifests/{commit}.json``, written by modelmgr's pull."""
    return Path(repo_path, MODELMGR_DIR, MANIFESTS_DIR, commit + MANIFEST_SUFFIX)


def _ago(timestamp: float) -> str:
    return format_age(time.time() - timestamp)


def _ignore(message: str) -> None:
    pass


def first_hop(path: str, is_link: bool = True) -> str:
    """What huggingface_hub calls a file's blob: its link's target made absolute, not resolved
    further; a file that is no link is its own blob. A link gone since the scan is its own too."""
    if not is_link:
        return path
    try:
        target = os.readlink(path)
    except OSError:
        return path
    return os.path.normpath(os.path.join(os.path.dirname(path), target))


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
    snapshot_path: Path
    last_modified: float
    nb_files: int
    incomplete: bool = False  # a manifest names files the snapshot lacks, or a link is broken
    missing: tuple[str, ...] = ()  # those files, '/'-separated, relative to the snapshot
    scanned: tuple | None = field(default=None, repr=False, compare=False)  # the scan's raw entries, if kept

    @cached_property
    def entries(self) -> tuple:
        """Raw ``(relative, path, is_link, size, inode, atime, mtime)`` of every file; read again
        from disk when the revision came from the scan index."""
        if self.scanned is not None:
            return self.scanned
        return tuple(_scan_snapshot(str(self.snapshot_path), _ignore)[0])

    @cached_property
    def files(self) -> tuple[CachedFile, ...]:
        """Every file, sorted by path, with its blob (links are read now, not during the scan)."""
        blobs_prefix = os.path.join(os.path.dirname(os.path.dirname(self.snapshot_path)), "blobs") + os.sep
        files = []
        for entry in sorted(self.entries):
            blob = first_hop(entry[_PATH], entry[_LINK])
            etag = blob[len(blobs_prefix):] if entry[_LINK] and blob.startswith(blobs_prefix) else None
            files.append(CachedFile(entry[_REL], blob, entry[_SIZE], etag if etag and os.sep not in etag else None))
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
    path: Path
    cache_dir: Path
    read_only: bool  # lives in one of the extra, read-only cache directories
    size_on_disk: int  # its distinct blobs, each counted once
    revisions: tuple[CachedRevision, ...]
    last_modified: float
    last_accessed: float
    nb_files: int  # distinct blobs, as huggingface_hub counts them
    content: dict = field(default_factory=dict, repr=False, compare=False)  # (st_dev, st_ino) -> size

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
        blobs_dir = str(self.path / "blobs")
        found: dict[str, CachedBlob] = {}
        for revision in self.revisions:
            for file, entry in zip(revision.files, sorted(revision.entries)):
                if file.blob_path in found:
                    continue
                if not entry[_LINK]:
                    where, is_link = IN_SNAPSHOT, False
                elif os.path.dirname(file.blob_path) == blobs_dir:
                    where, is_link = IN_BLOBS, os.path.islink(file.blob_path)
                else:
                    where, is_link = OUTSIDE, False
                found[file.blob_path] = CachedBlob(
                    file.blob_path, entry[_SIZE], entry[_ATIME], entry[_MTIME], where, is_link, entry[_KEY]
                )
        return tuple(found.values())

    @cached_property
    def _blobs_folder(self) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
        incomplete, others = [], []
        try:
            with os.scandir(self.path / "blobs") as iterator:
                for entry in iterator:
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    (incomplete if entry.name.endswith(INCOMPLETE_SUFFIX) else others).append((entry.path, size))
        except OSError:
            pass
        linked = {blob.path for blob in self.blobs}
        return tuple(sorted(incomplete)), tuple(sorted(item for item in others if item[0] not in linked))

    @property
    def incomplete_blobs(self) -> tuple[tuple[str, int], ...]:
        """(path, size) of partial downloads (``blobs/*.incomplete``): never counted in sizes."""
        return self._blobs_folder[0]

    @property
    def unreferenced_blobs(self) -> tuple[tuple[str, int], ...]:
        """(path, size) of the entries in blobs/ that no snapshot points to."""
        return self._blobs_folder[1]


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
        seen.update(repo.content)
    return sum(seen.values())


def scan_cache(cache_dirs: Sequence[str | os.PathLike] | str | os.PathLike, *, reuse: bool = False) -> CacheInfo:
    """Scan every cache directory, in order; the first is writable, the others read-only extras.

    Never raises for what it finds on disk: every problem becomes a line in ``warnings``. With
    ``reuse``, unchanged repos come from the scan index (see the module's docstring); their
    ``last_accessed`` is then as of their last full scan.
    """
    if isinstance(cache_dirs, (str, os.PathLike)):
        cache_dirs = [cache_dirs]
    dirs = tuple(Path(os.path.abspath(os.path.expanduser(os.fspath(d)))) for d in cache_dirs)
    warnings: list[str] = []
    repos: list[CachedRepo] = []
    for index, cache_dir in enumerate(dirs):
        repos.extend(_scan_one_cache(cache_dir, read_only=index > 0, warn=warnings.append, reuse=reuse))
    total = unique_size(repos)
    return CacheInfo(repos=tuple(repos), warnings=tuple(warnings), size_on_disk=total, cache_dirs=dirs)


def _scan_one_cache(cache_dir: Path, *, read_only: bool, warn: Callable[[str], None], reuse: bool) -> list[CachedRepo]:
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
    index = _ScanIndex(cache_dir) if reuse else None
    if index is not None and index.path is None:
        index = None  # turned off, or no place to keep it
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
        repo = index.lookup(entry.path, name, repo_type, repo_id, read_only) if index is not None else None
        if repo is None:
            repo, record = _scan_repo(entry.path, repo_type, repo_id, cache_dir, read_only, warn, index is not None)
            if index is not None:
                index.store(name, record)
        if repo is not None:
            repos.append(repo)
    if index is not None:
        index.save()
    return repos


def _list_dir(path: str, warn: Callable[[str], None]) -> list[os.DirEntry] | None:
    """The entries of a folder; None (and no warning) when it does not exist."""
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


def _read_small(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read_refs(refs_dir: str, warn: Callable[[str], None], seen: list[str] | None = None) -> dict[str, set[str]]:
    """commit -> names of the refs pointing at it (``main``, ``v1.0``, ``refs/pr/1``). ``seen``
    collects every folder and file read, for the scan index."""
    by_commit: dict[str, set[str]] = {}
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as iterator:
                entries = list(iterator)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            warn(f"{folder} is a file, not a folder; refs ignored.")
            continue
        except OSError as exc:
            warn(f"cannot read {folder}: {exc.strerror}; refs ignored.")
            continue
        if seen is not None:
            seen.append(folder)
        for entry in entries:
            name = prefix + entry.name
            if _is_dir(entry):
                stack.append((entry.path, name + "/"))
                continue
            if entry.name in _OS_FILES:
                continue
            if seen is not None:
                seen.append(entry.path)
            try:
                commit = _read_small(entry.path).strip()
            except OSError as exc:
                warn(f"cannot read ref {entry.path}: {exc.strerror}; ignored.")
                continue
            if not commit:
                warn(f"ref {entry.path} is empty; ignored.")
                continue
            by_commit.setdefault(commit, set()).add(name)
    return by_commit


def _read_manifests(entries: list[os.DirEntry], warn: Callable[[str], None]) -> dict[str, tuple[list[str], float]]:
    """commit -> (paths the manifest lists, the manifest's mtime)."""
    import json  # only caches modelmgr pulled into pay for it

    manifests: dict[str, tuple[list[str], float]] = {}
    for entry in entries:
        if not entry.name.endswith(MANIFEST_SUFFIX):
            continue  # among them, manifests being written (``{commit}.json.{pid}.tmp``)
        commit = entry.name[: -len(MANIFEST_SUFFIX)]
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
        except (ValueError, KeyError, TypeError, AttributeError):
            warn(f"manifest {entry.path} is not valid (expected {{\"files\": [{{\"path\": ...}}, ...]}}); ignored.")
            continue
        if document.get("commit", commit) != commit:
            warn(f"manifest {entry.path} names commit {document.get('commit')!r}, not its file name; trusting the file name.")
        manifests[commit] = (paths, mtime)
    return manifests


def _distinct_blobs(places: list, hops: dict[str, str]) -> int:
    """How many distinct blobs (first hops) these (path, is_link) places of one inode name."""
    if len(places) == 1:
        return 1
    names = set()
    for path, is_link in places:
        hop = hops.get(path)
        if hop is None:
            hop = hops[path] = first_hop(path, is_link)
        names.add(hop)
    return len(names)


def _scan_snapshot(top: str, warn: Callable[[str], None]) -> tuple[list[tuple], list[str], int, list[str]]:
    """(entries, broken links, regular files, folders read) of one snapshot."""
    entries: list[tuple] = []
    missing: list[str] = []
    folders: list[str] = []
    copies = 0
    stack = [(top, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as iterator:
                listed = list(iterator)
        except OSError as exc:
            warn(f"cannot read {folder}: {exc.strerror}; its files are skipped.")
            continue
        folders.append(folder)
        for entry in listed:
            name = entry.name
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            if real_dir:  # links to folders are never descended into, as in huggingface_hub
                stack.append((entry.path, prefix + name + "/"))
                continue
            if name in _OS_FILES:
                continue
            is_link = entry.is_symlink()
            try:
                result = entry.stat()  # through the link to the blob, as huggingface_hub does
            except OSError:
                if is_link:
                    warn(f"broken link {entry.path}: its blob is missing. Pull the model again to repair it.")
                    missing.append(prefix + name)
                else:
                    warn(f"cannot stat {entry.path}; skipped.")
                continue
            if stat.S_ISDIR(result.st_mode):  # a link to a folder is no file, as huggingface_hub sees it
                continue
            copies += not is_link
            entries.append(
                (prefix + name, entry.path, is_link, result.st_size, (result.st_dev, result.st_ino), result.st_atime, result.st_mtime)
            )
    return entries, missing, copies, folders


def _scan_repo(
    repo_path: str,
    repo_type: str,
    repo_id: str,
    cache_dir: Path,
    read_only: bool,
    warn: Callable[[str], None],
    indexing: bool = False,
) -> tuple[CachedRepo | None, tuple | None]:
    """The repo, and (when ``indexing``) its scan-index record, or None if it must not be indexed."""
    warned = []

    def note(message: str) -> None:
        warned.append(message)
        warn(message)

    # The known children are opened directly instead of listing the repo folder first: one
    # directory read fewer per repo, which is most of what a large cache costs.
    sep = os.sep
    snapshots_dir = repo_path + sep + "snapshots"
    try:
        with os.scandir(snapshots_dir) as iterator:
            snapshot_entries: list[os.DirEntry] | None = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        snapshot_entries = None
    except NotADirectoryError:
        note(f"{snapshots_dir} is a file, not a folder; the repo holds no usable revision.")
        snapshot_entries = None
    except OSError as exc:
        if not os.access(repo_path, os.R_OK | os.X_OK):
            note(f"cannot read {repo_path}: {exc.strerror}; skipped.")
            return None, None
        note(f"cannot read {snapshots_dir}: {exc.strerror}; its revisions are skipped.")
        snapshot_entries = None

    read: list[str] | None = [repo_path, snapshots_dir] if indexing else None
    refs_by_commit = _read_refs(repo_path + sep + "refs", note, read)
    manifests_dir = repo_path + sep + MODELMGR_DIR + sep + MANIFESTS_DIR
    manifest_entries = _list_dir(manifests_dir, note)
    manifests = _read_manifests(manifest_entries, note) if manifest_entries else {}
    if snapshot_entries is None and not manifests and not os.path.lexists(snapshots_dir):
        if not any(name.endswith(INCOMPLETE_SUFFIX) for name in _names(repo_path + sep + "blobs")):
            note(f"{repo_path} has no snapshots/ folder; it holds no usable revision.")

    # Per inode: [size, atime, mtime, [(path, is_link), ...]] over the whole repo.
    content: dict[tuple[int, int], list] = {}
    hops: dict[str, str] = {}
    revisions: list[CachedRevision] = []
    seen_commits: set[str] = set()
    any_copies = False
    for snapshot in snapshot_entries or ():
        commit = snapshot.name
        if commit in _OS_FILES:
            continue
        if snapshot.is_symlink() or not _is_dir(snapshot):
            kind = "a link" if snapshot.is_symlink() else "a file"
            note(f"{snapshot.path} is {kind}, not a snapshot folder; ignored.")
            continue
        top = snapshot.path
        entries, missing, copies, folders = _scan_snapshot(top, note)
        if read is not None:
            read.extend(folders)
        if copies:
            any_copies = True
            note(
                f"{top} holds {copies} regular file(s) instead of links into blobs/; they count towards its size "
                "and go with the snapshot when it is removed."
            )
        if commit in manifests:
            known = {entry[_REL] for entry in entries}
            known.update(missing)
            missing.extend(path for path in manifests[commit][0] if path not in known)
        places: dict[tuple[int, int], list] = {}  # this revision's files per inode
        last_modified = 0.0
        for entry in entries:
            key = entry[_KEY]
            where = (entry[_PATH], entry[_LINK])
            held = content.get(key)
            if held is None:
                content[key] = [entry[_SIZE], entry[_ATIME], entry[_MTIME], [where]]
            else:
                held[3].append(where)
            local = places.get(key)
            if local is None:
                places[key] = [where]
            else:
                local.append(where)
            if entry[_MTIME] > last_modified:
                last_modified = entry[_MTIME]
        size = 0
        for key, where in places.items():
            size += content[key][0] * _distinct_blobs(where, hops)
        if not entries:
            try:
                last_modified = snapshot.stat().st_mtime
            except OSError:
                last_modified = 0.0
        seen_commits.add(commit)
        revisions.append(
            CachedRevision(
                commit=commit,
                refs=frozenset(refs_by_commit.get(commit, ())),
                size_on_disk=size,
                snapshot_path=Path(top),
                last_modified=last_modified,
                nb_files=len(entries),
                incomplete=bool(missing),
                missing=tuple(missing),
                scanned=tuple(entries),
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
                    snapshot_path=Path(snapshots_dir, commit),
                    last_modified=mtime,
                    nb_files=0,
                    incomplete=True,
                    missing=tuple(paths),
                    scanned=(),
                )
            )
    for commit, ref_names in refs_by_commit.items():
        if commit not in seen_commits:
            for ref in sorted(ref_names):
                note(f"ref {ref!r} of {repo_path} points to commit {commit[:40]!r}, which has no snapshot; ignored.")

    size = nb_files = 0
    last_accessed = last_modified = 0.0
    for held in content.values():
        distinct = _distinct_blobs(held[3], hops) if len(held[3]) > 1 else 1
        size += held[0] * distinct
        nb_files += distinct
        if held[1] > last_accessed:
            last_accessed = held[1]
        if held[2] > last_modified:
            last_modified = held[2]
    if not content:
        try:
            own = os.stat(repo_path)
            last_accessed, last_modified = own.st_atime, own.st_mtime
        except OSError:
            pass
    repo = CachedRepo(
        repo_id=repo_id,
        repo_type=repo_type,
        path=Path(repo_path),
        cache_dir=cache_dir,
        read_only=read_only,
        size_on_disk=size,
        revisions=tuple(revisions),
        last_modified=last_modified,
        last_accessed=last_accessed,
        nb_files=nb_files,
        content={key: held[0] for key, held in content.items()},
    )
    if read is None or warned or any_copies:
        return repo, None
    if manifest_entries is not None:
        read.append(manifests_dir)
    if os.path.isdir(repo_path + sep + MODELMGR_DIR):
        read.append(repo_path + sep + MODELMGR_DIR)
    read.append(repo_path + sep + "blobs")
    return repo, _index_record(repo, read, content)


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


# --- the scan index ------------------------------------------------------------------------------


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        result = os.stat(path)
    except OSError:
        return None
    return (result.st_mtime_ns, result.st_ctime_ns, result.st_ino, result.st_size)


def _index_record(repo: CachedRepo, read: list[str], content: dict) -> tuple | None:
    """What the index keeps of a repo, or None when it must be scanned every time."""
    root = str(repo.path)
    blobs_dir = root + os.sep + "blobs"
    # Indexed only if every file is a plain (not linked) blob in this repo's blobs/: those are
    # written once and replaced only by a rename, which the folder's stamp shows.
    try:
        with os.scandir(blobs_dir) as iterator:
            plain = {entry.inode() for entry in iterator if entry.is_file(follow_symlinks=False)}
        blobs_dev = os.stat(blobs_dir).st_dev
    except OSError:
        return None
    if any(dev != blobs_dev or ino not in plain for dev, ino in content):
        return None
    relative: list[str] = []
    stamps: list[int] = []
    newest = time.time_ns() - int(RACY_SECONDS * 1e9)
    for path in read:
        stamp = _stamp(path)
        if stamp is None or stamp[0] >= newest or stamp[1] >= newest:
            return None
        relative.append(path[len(root):])
        stamps.extend(stamp)
    revisions = tuple(
        (r.commit, tuple(sorted(r.refs)), r.size_on_disk, r.last_modified, r.nb_files, r.incomplete, r.missing)
        for r in repo.revisions
    )
    flat: list[int] = []
    for (dev, ino), held in content.items():
        flat.extend((dev, ino, held[0]))
    head = (repo.size_on_disk, repo.nb_files, repo.last_modified, repo.last_accessed)
    return (tuple(relative), tuple(stamps), head, revisions, tuple(flat))


def _index_file(cache_dir: Path) -> str | None:
    if os.environ.get("MODELMGR_SCAN_INDEX", "").strip().lower() in {"0", "false", "no", "off"}:
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = str(cache_dir).strip(os.sep).replace(os.sep, "%") or "root"
    if len(name) > 160:
        import zlib

        name = f"{name[-120:]}-{zlib.crc32(str(cache_dir).encode()):08x}"
    return os.path.join(base, "modelmgr", "scan-index", f"{name}.v{INDEX_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}")


class _ScanIndex:
    """Repo records of one cache directory, loaded once, written back only if something changed."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.path = _index_file(cache_dir)
        self.records: dict[str, tuple] = {}
        self.kept: dict[str, tuple] = {}
        self.changed = False
        self.header: tuple = ()
        if self.path is None:
            return
        try:
            folder = os.stat(cache_dir)
        except OSError:
            self.path = None
            return
        # A cache folder replaced, or a disk mounted with another device number, starts afresh.
        self.header = ("modelmgr-scan-index", INDEX_VERSION, folder.st_dev, folder.st_ino)
        import marshal

        try:
            with open(self.path, "rb") as handle:
                data = handle.read()  # marshal.load() on a file reads in small steps: far slower
            header, records = marshal.loads(data)
            if header == self.header and isinstance(records, dict):
                self.records = records
        except (OSError, EOFError, ValueError, TypeError):
            pass

    def lookup(self, repo_path: str, name: str, repo_type: str, repo_id: str, read_only: bool) -> CachedRepo | None:
        record = self.records.get(name)
        if record is None:
            return None
        try:
            relative, stamps = record[0], record[1]
            position = 0
            for suffix in relative:
                result = os.stat(repo_path + suffix)
                if (
                    result.st_mtime_ns != stamps[position]
                    or result.st_ctime_ns != stamps[position + 1]
                    or result.st_ino != stamps[position + 2]
                    or result.st_size != stamps[position + 3]
                ):
                    return None
                position += 4
            size, nb_files, last_modified, last_accessed = record[2]
            prefix = repo_path + os.sep + "snapshots" + os.sep
            revisions = tuple(
                CachedRevision(commit, frozenset(refs), rsize, Path(prefix + commit), modified, count, incomplete, missing)
                for commit, refs, rsize, modified, count, incomplete, missing in record[3]
            )
            flat = record[4]
            content = {(flat[i], flat[i + 1]): flat[i + 2] for i in range(0, len(flat), 3)}
        except (OSError, ValueError, TypeError, IndexError):
            return None
        self.kept[name] = record
        return CachedRepo(
            repo_id, repo_type, Path(repo_path), self.cache_dir, read_only, size, revisions, last_modified, last_accessed,
            nb_files, content,
        )

    def store(self, name: str, record: tuple | None) -> None:
        if record is not None:
            self.kept[name] = record
        if record is not None or name in self.records:
            self.changed = True

    def save(self) -> None:
        if self.path is None or not (self.changed or self.kept.keys() != self.records.keys()):
            return
        import marshal

        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "wb") as handle:
                marshal.dump((self.header, self.kept), handle)
            os.replace(temporary, self.path)
        except (OSError, ValueError):
            try:
                os.unlink(temporary)
            except OSError:
                pass
