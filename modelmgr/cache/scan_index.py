"""The scan index: repos that have not changed since they were last scanned, served without reading them.

``scan_cache(..., reuse=True)`` (what ``list`` and ``du`` use) keeps this index outside the cache,
in ``$XDG_CACHE_HOME/modelmgr/scan-index/``, as git keeps its index: a repo whose folders all still
carry the same mtime, ctime, inode and size as when it was scanned is taken from the index instead
of being read file by file. Only repos whose files are all plain blobs in their own ``blobs/`` and
that scanned without a warning are indexed, and only once their folders are a few seconds old, so a
change made within the same clock tick as a scan cannot hide. What the index cannot see is a blob
rewritten in place (huggingface_hub never does that; ``modelmgr verify`` would catch it) and blob
access times, which it keeps from the scan. ``MODELMGR_SCAN_INDEX=0`` turns it off.

The index file is ours (outside every cache), but it is still read back as untrusted: a record of
the wrong shape is a repo to scan again, never an error.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from modelmgr.cache.layout import BLOBS, SNAPSHOTS
from modelmgr.cache.model import CachedRepo, CachedRevision

INDEX_VERSION = 2
# Folders changed less than this long before a scan are not indexed: a second change within the
# same timestamp tick would leave their stamps equal (git's "racy clean" problem).
RACY_SECONDS = 2.0


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        result = os.stat(path)
    except OSError:
        return None
    return (result.st_mtime_ns, result.st_ctime_ns, result.st_ino, result.st_size)


def index_record(repo: CachedRepo, read: list[str], content: dict) -> tuple | None:
    """What the index keeps of a repo, or None when it must be scanned every time."""
    root = str(repo.path)
    blobs_dir = root + os.sep + BLOBS
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
        (r.commit, tuple(sorted(r.refs)), r.size_on_disk, r.last_modified, r.nb_files, r.incomplete, r.missing,
         r.weight_format, r.gguf_files)
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


class ScanIndex:
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
            prefix = repo_path + os.sep + SNAPSHOTS + os.sep
            revisions = tuple(
                CachedRevision(commit, frozenset(refs), rsize, prefix + commit, modified, count, incomplete, missing,
                               weight_format=weights, gguf_files=gguf)
                for commit, refs, rsize, modified, count, incomplete, missing, weights, gguf in record[3]
            )
            if not all(isinstance(r.weight_format, (str, type(None))) and all(isinstance(n, str) for n in r.gguf_files)
                       for r in revisions):
                return None  # a record not as this version writes it: scan the repo instead
            flat = record[4]
            content = {(flat[i], flat[i + 1]): flat[i + 2] for i in range(0, len(flat), 3)}
        except (OSError, ValueError, TypeError, IndexError):
            return None
        self.kept[name] = record
        return CachedRepo(
            repo_id, repo_type, repo_path, self.cache_dir, read_only, size, revisions, last_modified, last_accessed,
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
