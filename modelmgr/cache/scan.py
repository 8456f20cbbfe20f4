"""huggingface_hub's cache layout, scanned into the dataclasses of ``model.py``.

The scan is what ``modelmgr list``, ``du`` and ``rm`` stand on, so it is written for speed: one
``os.scandir`` per folder, one readlink per snapshot link and one lstat per blob those name
(``walk.py``), plain strings and tuples below the revision level, nothing heavier than the standard
library imported, and a large cache read by several processes at once (``scan_workers.py``).

The scan tells blobs apart by inode and counts each by its link's first hop, as huggingface_hub
does (so a hard-linked duplicate counts twice). Where huggingface_hub gives up on a whole repo (a
broken link, a dangling ref), this scan records a warning and keeps the rest. Everything read back
is checked before use (refs and manifests in ``repo_files.py``): a ref that holds anything but a
40-hex commit, a manifest of the wrong shape, a FIFO where a file should be, all become warnings,
never paths.

modelmgr's pull writes ``{repo}/.modelmgr/manifests/{commit}.json`` listing the files a snapshot is
meant to hold; a revision whose manifest names a file the snapshot lacks is *incomplete*. Without a
manifest (any cache huggingface_hub filled) a revision is complete as far as anyone can tell, unless
one of its links is broken.

``scan_cache(..., reuse=True)`` (what ``list`` and ``du`` use) serves unchanged repos from the scan
index (``scan_index.py``); ``MODELMGR_SCAN_INDEX=0`` turns it off.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Sequence

from modelmgr.cache.layout import BLOBS, LOCKS, MANIFESTS, MODELMGR_DIR, REFS, SNAPSHOTS, parse_folder_name, partial_download
from modelmgr.cache.model import (
    CachedRepo, CachedRevision, CacheInfo, ScanWarning, plain_repo, repo_from_plain, unique_size, weights_summary,
)
from modelmgr.cache.repo_files import read_manifests, read_refs
from modelmgr.cache.walk import ATIME, KEY, LINK, MTIME, PATH, REL, SIZE, OS_FILES, Warn, first_hop, scan_snapshot

# Top-level entries of a cache that belong to huggingface_hub and are not repos: its lock folder,
# its cache tag, its cache-wide shared blob store and the layout version file older releases wrote.
_NOT_REPOS = frozenset({LOCKS, "CACHEDIR.TAG", BLOBS, "version.txt", *OS_FILES})
# Repo kinds huggingface_hub caches but modelmgr does not administer: skipped without a warning.
_FOREIGN_KINDS = ("kernels--",)


def scan_cache(
    cache_dirs: Sequence[str | os.PathLike] | str | os.PathLike, *, reuse: bool = False, parallel: bool = False,
) -> CacheInfo:
    """Scan every cache directory, in order; the first is writable, the others read-only extras.

    Never raises for what it finds on disk: every problem becomes a line in ``warnings``. With
    ``reuse``, unchanged repos come from the scan index (see the module's docstring); their
    ``last_accessed`` is then as of their last full scan, and no revision keeps the raw entries of
    its files (read again if asked for: what ``list`` and ``du`` show needs none). With ``parallel``
    as well (for commands, never a library caller whose threads a fork would copy), many repos to
    read are split between processes (``scan_workers``).
    """
    if isinstance(cache_dirs, (str, os.PathLike)):
        cache_dirs = [cache_dirs]
    dirs = tuple(Path(os.path.abspath(os.path.expanduser(os.fspath(d)))) for d in cache_dirs)
    warnings: list[ScanWarning] = []
    repos: list[CachedRepo] = []
    # The scan makes many objects and no reference cycles: the collector would only walk the
    # growing heap again and again (some 3 ms on 1000 repos). A command's scan (``parallel``)
    # pauses it, process-wide, until the scan is done; a library caller's threads are left alone.
    collecting = parallel and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        for index, cache_dir in enumerate(dirs):
            repos.extend(_scan_one_cache(cache_dir, read_only=index > 0, reuse=reuse, parallel=parallel,
                                         warn=lambda path, message: warnings.append(ScanWarning(path, message))))
    finally:
        if collecting:
            gc.enable()
    total = unique_size(repos)
    return CacheInfo(repos=tuple(repos), warnings=tuple(warnings), size_on_disk=total, cache_dirs=dirs)


def _scan_one_cache(cache_dir: Path, *, read_only: bool, warn: Warn, reuse: bool, parallel: bool) -> list[CachedRepo]:
    root = str(cache_dir)
    try:
        with os.scandir(root) as iterator:
            entries = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        if read_only:
            warn(root, f"cache directory {root} (listed in cache.dirs) does not exist; skipped.")
        return []  # the writable cache simply has nothing yet
    except NotADirectoryError:
        warn(root, f"cache directory {root} is a file, not a folder; skipped. Point the cache setting at a folder.")
        return []
    except OSError as exc:
        warn(root, f"cannot read cache directory {root}: {exc.strerror}; skipped.")
        return []
    index = None
    if reuse:
        from modelmgr.cache.scan_index import ScanIndex

        index = ScanIndex(cache_dir)
    if index is not None and index.path is None:
        index = None  # turned off, or no place to keep it
    found: list[CachedRepo | tuple] = []  # in folder order: a repo from the index, or what to scan
    for entry in entries:
        name = entry.name
        if name in _NOT_REPOS or name.startswith(".") or name.startswith(_FOREIGN_KINDS):
            continue
        parsed = parse_folder_name(name)
        if parsed is None:
            warn(entry.path, f"{entry.path}: not a model, dataset or space folder (expected models--org--name); ignored.")
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            warn(entry.path, f"{entry.path}: a file where a repo folder was expected; ignored.")
            continue
        repo_type, repo_id = parsed
        repo = index.lookup(entry.path, name, repo_type, repo_id, read_only) if index is not None else None
        found.append(repo if repo is not None else (entry.path, name, repo_type, repo_id))
    todo = [item for item in found if isinstance(item, tuple)]
    scanned = dict(zip((item[0] for item in todo), _scan_repos(todo, cache_dir, read_only, warn, index is not None, reuse, parallel)))
    repos = []
    for item in found:
        if isinstance(item, tuple):
            repo, record = scanned[item[0]]
            if index is not None:
                index.store(item[1], record)
            if repo is None:
                continue
            item = repo
        repos.append(item)
    if index is not None:
        index.save()
    return repos


def _scan_repos(
    todo: list[tuple], cache_dir: Path, read_only: bool, warn: Warn, indexing: bool, summary: bool, parallel: bool,
) -> list[tuple]:
    """``_scan_repo`` of each, in order; split between processes when ``parallel`` and it pays.
    A ``summary`` keeps no raw entries, whichever process read the repo."""
    def scan_one(item: tuple, warn: Warn) -> tuple:
        return _scan_repo(item[0], item[2], item[3], cache_dir, read_only, warn, indexing, keep_entries=not summary)

    if parallel and summary:  # a helper sends no raw entries: only a summary scan may use one
        from modelmgr.cache import scan_workers

        processes = scan_workers.process_count(len(todo), warn)
        if processes > 1:
            return scan_workers.scan_split(
                todo, scan_one, warn, processes,
                pack=lambda found: (plain_repo(found[0]) if found[0] is not None else None, found[1]),
                unpack=lambda data: (repo_from_plain(data[0]) if data[0] is not None else None, data[1]),
            )
    return [scan_one(item, warn) for item in todo]


def _list_dir(path: str, warn: Warn) -> list[os.DirEntry] | None:
    """The entries of a folder; None (and no warning) when it does not exist."""
    try:
        with os.scandir(path) as iterator:
            return list(iterator)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn(path, f"cannot read {path}: {exc.strerror}; skipped.")
        return None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _distinct_blobs(entries: list, hops: dict[str, str]) -> int:
    """How many distinct blobs (first hops) these scanned entries of one inode name."""
    if len(entries) == 1:
        return 1
    names = set()
    for entry in entries:
        hop = hops.get(entry[PATH])
        if hop is None:
            hop = hops[entry[PATH]] = first_hop(entry[PATH], entry[LINK])
        names.add(hop)
    return len(names)


def _scan_repo(
    repo_path: str,
    repo_type: str,
    repo_id: str,
    cache_dir: Path,
    read_only: bool,
    warn: Warn,
    indexing: bool = False,
    keep_entries: bool = True,
) -> tuple[CachedRepo | None, tuple | None]:
    """The repo, and (when ``indexing``) its scan-index record, or None if it must not be indexed.
    Without ``keep_entries`` its revisions read their files again if ever asked for them."""
    warned = []

    def note(path: str, message: str) -> None:
        warned.append(message)
        warn(path, message)

    # The known children are opened directly instead of listing the repo folder first: one
    # directory read fewer per repo, which is most of what a large cache costs.
    sep = os.sep
    snapshots_dir = repo_path + sep + SNAPSHOTS
    try:
        with os.scandir(snapshots_dir) as iterator:
            snapshot_entries: list[os.DirEntry] | None = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        snapshot_entries = None
    except NotADirectoryError:
        note(snapshots_dir, f"{snapshots_dir} is a file, not a folder; the repo holds no usable revision.")
        snapshot_entries = None
    except OSError as exc:
        if not os.access(repo_path, os.R_OK | os.X_OK):
            note(repo_path, f"cannot read {repo_path}: {exc.strerror}; skipped.")
            return None, None
        note(snapshots_dir, f"cannot read {snapshots_dir}: {exc.strerror}; its revisions are skipped.")
        snapshot_entries = None

    read: list[str] | None = [repo_path, snapshots_dir] if indexing else None
    refs_by_commit = read_refs(repo_path + sep + REFS, note, read)
    manifests_dir = repo_path + sep + MODELMGR_DIR + sep + MANIFESTS
    manifest_entries = _list_dir(manifests_dir, note)
    manifests = read_manifests(manifest_entries, note) if manifest_entries else {}
    if snapshot_entries is None and not manifests and not os.path.lexists(snapshots_dir):
        if not any(partial_download(name) for name in _names(repo_path + sep + BLOBS)):
            note(repo_path, f"{repo_path} has no snapshots/ folder; it holds no usable revision.")

    # Per inode: [size, atime, mtime, [scanned entry, ...]] over the whole repo.
    content: dict[tuple[int, int], list] = {}
    hops: dict[str, str] = {}
    blobs: dict[str, os.stat_result | None] = {}  # lstat of blobs/{name}, filled by scan_snapshot
    revisions: list[CachedRevision] = []
    seen_commits: set[str] = set()
    any_copies = False
    for snapshot in snapshot_entries or ():
        commit = snapshot.name
        if commit in OS_FILES:
            continue
        if snapshot.is_symlink() or not _is_dir(snapshot):
            kind = "a link" if snapshot.is_symlink() else "a file"
            note(snapshot.path, f"{snapshot.path} is {kind}, not a snapshot folder; ignored.")
            continue
        top = snapshot.path
        entries, missing, copies, folders = scan_snapshot(top, note, blobs, hops)
        if read is not None:
            read.extend(folders)
        if copies:
            any_copies = True
            note(top,
                f"{top} holds {copies} regular file(s) instead of links into blobs/; they count towards its size "
                "and go with the snapshot when it is removed."
            )
        if commit in manifests:
            known = {entry[REL] for entry in entries}
            known.update(missing)
            missing.extend(path for path in manifests[commit][0] if path not in known)
        places: dict[tuple[int, int], list] = {}  # this revision's entries per inode
        last_modified = 0.0
        for entry in entries:
            local = places.get(entry[KEY])
            if local is None:
                places[entry[KEY]] = [entry]
            else:
                local.append(entry)
            if entry[MTIME] > last_modified:
                last_modified = entry[MTIME]
        size = 0
        for key, group in places.items():
            held = content.get(key)
            if held is None:
                first = group[0]
                held = content[key] = [first[SIZE], first[ATIME], first[MTIME], group]
            else:
                held[3] = held[3] + group
            size += held[0] if len(group) == 1 else held[0] * _distinct_blobs(group, hops)
        if not entries:
            try:
                last_modified = snapshot.stat().st_mtime
            except OSError:
                last_modified = 0.0
        seen_commits.add(commit)
        weight_format, gguf_files = weights_summary(entry[REL] for entry in entries)
        revisions.append(
            CachedRevision(
                commit=commit,
                refs=frozenset(refs_by_commit.get(commit, ())),
                size_on_disk=size,
                snapshot_dir=top,
                last_modified=last_modified,
                nb_files=len(entries),
                incomplete=bool(missing),
                missing=tuple(missing),
                scanned=tuple(entries) if keep_entries else None,
                weight_format=weight_format,
                gguf_files=gguf_files,
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
                    snapshot_dir=snapshots_dir + sep + commit,
                    last_modified=mtime,
                    nb_files=0,
                    incomplete=True,
                    missing=tuple(paths),
                    scanned=() if keep_entries else None,
                )
            )
    for commit, ref_names in refs_by_commit.items():
        if commit not in seen_commits:
            for ref in sorted(ref_names):
                note(repo_path, f"ref {ref!r} of {repo_path} points to commit {commit[:40]!r}, which has no snapshot; ignored.")

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
        folder=repo_path,
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
    read.append(repo_path + sep + BLOBS)
    from modelmgr.cache.scan_index import index_record

    return repo, index_record(repo, read, content)


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []

