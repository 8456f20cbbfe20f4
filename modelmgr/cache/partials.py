"""What a repo holds outside its snapshots: partial downloads (modelmgr's and huggingface_hub's),
their resume state, blobs a killed pull verified but never renamed, snapshot links it never
renamed, and orphan blobs. ``prune`` plans with ``find_leftovers`` and deletes with ``remove``; a
pull calls ``claim_partial`` before it resumes a partial file.

Whose file is it, and is its writer still running? The name says whose (``layout.partial_download``).
modelmgr and huggingface_hub both hold ``.locks/{repo}/{etag}.lock`` while writing a blob, so a held
lock means "in flight, hands off" for either tool's file. A name that carries a process id
(``{etag}.incomplete.{pid}.{tid}``, ``.{name}.{pid}.{tid}.tmp``) is also left alone while that
process lives; once it is gone the file is garbage, counted and taken by ``prune --incomplete``.
huggingface_hub's ``{etag}.{8 hex}.incomplete`` is private to one process (it never resumes it),
so with its lock free it is garbage as well.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelmgr.cache.layout import (
    COMMITTING, MODELMGR, SNAPSHOTS, STATE_SUFFIX, RepoPaths, partial_download, repo_paths, temporary_owner,
)
from modelmgr.cache.locking import try_lock
from modelmgr.cache.model import CachedRepo
from modelmgr.project.names import is_etag

INCOMPLETE = "partial download"
PARTIAL_STATE = "resume state"
ORPHAN = "orphan blob"
UNFINISHED = "unrenamed file"  # a verified blob or snapshot link a killed pull never renamed


@dataclass(frozen=True)
class Leftover:
    """A file in a repo that belongs to no snapshot."""

    repo: CachedRepo
    kind: str  # INCOMPLETE, PARTIAL_STATE, UNFINISHED or ORPHAN
    path: Path
    size: int
    state: Path | None = None  # a partial download's .modelmgr/partial/{etag}.json, deleted with it
    lock_etag: str | None = None  # the blob lock whose holder may still be writing it

    @property
    def etag(self) -> str:
        return self.lock_etag or self.path.stem

    def to_dict(self) -> dict:
        return {"id": self.repo.display_id, "kind": self.kind, "path": str(self.path), "size_bytes": self.size,
                "state": str(self.state) if self.state else None}


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a pid from another host of a shared
    cache may look alive: that only keeps a file longer)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a pid we cannot even ask about: keep the file
    return True


def lock_free(paths: RepoPaths, etag: str) -> bool:
    with try_lock(paths.lock(etag)) as free:
        return free


def find_leftovers(repo: CachedRepo, *, incomplete: bool, orphans: bool, now: float, grace: float) -> tuple[list[Leftover], int]:
    """(what may go, how many orphans were too young to take). Writers that still run keep theirs."""
    found: list[Leftover] = []
    paths = repo_paths(repo)
    young = 0
    if incomplete:
        claimed: set[str] = set()
        for path, size in repo.incomplete_blobs:
            writer, etag, pid = partial_download(os.path.basename(path))  # type: ignore[misc]
            if not is_etag(etag):
                continue  # not a blob's partial by name: `modelmgr verify` reports it
            if writer == COMMITTING:
                if pid is not None and not process_alive(pid):
                    found.append(Leftover(repo, UNFINISHED, Path(path), size, lock_etag=etag))
                continue
            state = paths.partial_state(etag) if writer == MODELMGR else None
            if state is not None:
                claimed.add(state.name)
            kept_state = state if state is not None and os.path.lexists(state) else None
            found.append(Leftover(repo, INCOMPLETE, Path(path), size, kept_state, lock_etag=etag))
        try:
            with os.scandir(paths.partial_states) as entries:
                for entry in entries:
                    if entry.name.endswith(STATE_SUFFIX) and entry.name not in claimed:
                        found.append(Leftover(repo, PARTIAL_STATE, Path(entry.path), entry.stat(follow_symlinks=False).st_size))
        except OSError:
            pass
        found.extend(_unrenamed_links(repo))
    if orphans:
        for path, size in repo.unreferenced_blobs:
            if not is_etag(os.path.basename(path)):
                continue  # not a blob by name: `modelmgr verify` reports it; prune never guesses
            try:
                modified = os.lstat(path).st_mtime
            except OSError:
                continue
            if now - modified < grace:
                young += 1
                continue
            found.append(Leftover(repo, ORPHAN, Path(path), size))
    return found, young


def _unrenamed_links(repo: CachedRepo) -> list[Leftover]:
    """``.{name}.{pid}.{tid}.tmp`` entries in snapshots whose process is gone (the scan skips them)."""
    found = []
    for top, folders, files in os.walk(repo.path / SNAPSHOTS):  # os.walk never follows links to folders
        for name in files + folders:
            owner = temporary_owner(name) if name.startswith(".") else None
            if owner is None or process_alive(owner[1]):
                continue
            path = Path(top, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                found.append(Leftover(repo, UNFINISHED, path, 0 if stat.S_ISLNK(info.st_mode) else info.st_size))
    return found


def remove(item: Leftover, on_skip=None) -> int:
    """Delete one leftover (and its state), re-checking that no writer holds its lock now."""
    from modelmgr.cache.removal import delete_path

    repo_root = os.path.realpath(item.repo.path)
    within = os.path.realpath(os.path.dirname(item.path))  # only this very entry; delete_path checks it is in the repo
    if not (within == repo_root or within.startswith(repo_root + os.sep)):
        return 0
    if item.lock_etag is not None and not lock_free(repo_paths(item.repo), item.lock_etag):
        if on_skip is not None:
            on_skip(f"{item.path}: a download holds its lock now; kept.")
        return 0
    freed = item.size if delete_path(item.path, within=within) else 0
    if item.state is not None:
        delete_path(item.state, within=repo_root)
    return freed


def claim_partial(paths: RepoPaths, etag: str) -> None:
    """Make sure a partial download about to be resumed is a regular file of our own.

    A verified blob that a killed pull never renamed (``{etag}.incomplete.{pid}.{tid}``, its process
    gone) is adopted as the partial file: the resume finds all of it there and only hashes it.

    A link planted as ``blobs/{etag}.incomplete`` would have the pull take the size of whatever it
    points to as bytes already fetched and then write model bytes into it; another user's file in a
    shared cache is not ours to write into. Either is removed with its resume state, and the pull
    starts that file afresh. Called with the blob's lock held."""
    incomplete = paths.incomplete(etag)
    state = paths.partial_state(etag)
    try:
        info = os.lstat(incomplete)
    except OSError:
        info = _adopt(paths, etag, incomplete)
    if info is not None and (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid()):
        for path in (incomplete, state):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                from modelmgr.errors import UnsafeCacheEntry

                raise UnsafeCacheEntry(f"{path} is in the way of a download and cannot be removed ({exc.strerror}). "
                                       "Remove it by hand and pull again.") from None
        return
    try:
        if stat.S_ISLNK(os.lstat(state).st_mode):
            os.unlink(state)
    except OSError:
        pass


def _adopt(paths: RepoPaths, etag: str, incomplete: Path) -> os.stat_result | None:
    """Rename a dead committer's ``{etag}.incomplete.{pid}.{tid}`` to ``{etag}.incomplete``; the
    stat of what is there now, or None."""
    try:
        names = os.listdir(paths.blobs)
    except OSError:
        return None
    for name in names:
        found = partial_download(name)
        if found is None or found[0] != COMMITTING or found[1] != etag or process_alive(found[2] or 0):
            continue
        candidate = paths.blobs / name
        try:
            info = os.lstat(candidate)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                continue
            os.rename(candidate, incomplete)
            return info
        except OSError:
            continue
    return None
