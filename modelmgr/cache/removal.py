"""Removing cached revisions and repos: plan (what goes, what it frees), show, then execute.

Safety first: nothing outside the repo's folder is deleted, apart from huggingface_hub's lock
folder for that repo. Every path is checked at execution time: its parent folder, resolved, must
lie inside the resolved repo folder; the last component is never resolved, so a link is unlinked
and never followed; ``shutil.rmtree`` runs only on real folders (it refuses links, and never
follows the links it meets inside). A snapshot link pointing outside the repo's ``blobs/`` is
counted in sizes, as huggingface_hub counts it, but its target is never touched.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from modelmgr.cache.model import IN_BLOBS, IN_SNAPSHOT, OUTSIDE, CacheInfo, CachedRepo, CachedRevision
from modelmgr.errors import ModelmgrError, NotCached
from modelmgr.cache.layout import BLOBS, LOCKS, NO_EXIST, REFS, SNAPSHOTS, repo_paths
from modelmgr.units import format_size

MIN_PREFIX = 7
_HEX = re.compile(r"[0-9a-f]+")  # with fullmatch: "$" would let a trailing newline through


def _display(repo_id: str, repo_type: str) -> str:
    return repo_id if repo_type == "model" else f"{repo_type}:{repo_id}"


@dataclass(frozen=True)
class RemovalPlan:
    """What removing some revisions of one repo (or all of it) deletes and frees. Nothing happens
    until ``execute()``."""

    repo: CachedRepo
    revisions: tuple[CachedRevision, ...]  # the revisions that go
    whole_repo: bool  # nothing remains: the repo folder itself goes
    refs: tuple[Path, ...] = ()
    snapshots: tuple[Path, ...] = ()
    blobs: tuple[Path, ...] = ()  # blobs/ entries no remaining revision uses
    no_exist: tuple[Path, ...] = ()
    manifests: tuple[Path, ...] = ()
    repo_folder: Path | None = None
    lock_folder: Path | None = None
    freed_bytes: int = 0
    kept_blobs: int = 0  # blobs of the removed revisions that remaining revisions still use
    notes: tuple[str, ...] = field(default=())

    @property
    def freed_str(self) -> str:
        return format_size(self.freed_bytes)

    @property
    def paths(self) -> list[Path]:
        """Everything ``execute()`` deletes, in the order it deletes them."""
        if self.whole_repo:
            return [p for p in (self.repo_folder, self.lock_folder) if p is not None]
        return [*self.refs, *self.snapshots, *self.manifests, *self.no_exist, *self.blobs]

    def describe(self) -> list[str]:
        """Lines for a person: a summary, then the details, indented."""
        repo = self.repo
        labels = ", ".join(revision.label for revision in self.revisions) or "no revisions"
        if self.whole_repo:
            lines = [f"{repo.display_id}: the whole repo ({len(self.revisions)} revision(s): {labels}), frees {self.freed_str}"]
            lines.append(f"  folder {self.repo_folder}")
            if self.lock_folder is not None:
                lines.append(f"  locks  {self.lock_folder}")
        else:
            lines = [f"{repo.display_id}: revision(s) {labels}, frees {self.freed_str}"]
            for snapshot in self.snapshots:
                lines.append(f"  snapshot {snapshot}")
            refs_dir = Path(repo.path, REFS)
            for ref in self.refs:
                lines.append(f"  ref      {ref.relative_to(refs_dir).as_posix()}")
            lines.append(f"  {len(self.blobs)} blob(s) no other revision uses" + (
                f"; {self.kept_blobs} kept for the revisions that stay" if self.kept_blobs else ""
            ))
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines

    def to_dict(self) -> dict:
        return {
            **self.repo.identity(),
            "whole_repo": self.whole_repo,
            "revisions": [{"revision": r.commit, "refs": r.sorted_refs} for r in self.revisions],
            "freed_bytes": self.freed_bytes,
            "kept_blobs": self.kept_blobs,
            "delete": [str(path) for path in self.paths],
            "notes": list(self.notes),
        }

    def execute(self) -> int:
        """Delete what the plan lists and return the bytes freed. Safe to run twice.

        The plan was made from a scan, and a person may have taken a minute to confirm it: if a
        pull has changed the repo since, or is downloading into it now, nothing is deleted.
        """
        self._check_still_current()
        repo_root = os.path.realpath(self.repo.path)
        if self.whole_repo:
            assert self.repo_folder is not None
            delete_path(self.repo_folder, within=os.path.realpath(self.repo.cache_dir))
            if self.lock_folder is not None:
                delete_path(self.lock_folder, within=os.path.realpath(self.repo.cache_dir / LOCKS))
            return self.freed_bytes
        refs_root = os.path.join(repo_root, REFS)
        for ref in self.refs:
            delete_path(ref, within=refs_root)
            _prune_empty_parents(ref.parent, stop=Path(self.repo.path, REFS))
        for snapshot in self.snapshots:
            delete_path(snapshot, within=os.path.join(repo_root, SNAPSHOTS))
        for manifest in self.manifests:
            delete_path(manifest, within=repo_root)
        for marker in self.no_exist:
            delete_path(marker, within=os.path.join(repo_root, NO_EXIST))
            _prune_empty_parents(marker.parent, stop=Path(self.repo.path))
        blobs_root = os.path.join(repo_root, BLOBS)
        for blob in self.blobs:
            delete_path(blob, within=blobs_root)
        return self.freed_bytes


    def _check_still_current(self) -> None:
        from modelmgr.cache.scan import scan_cache
        from modelmgr.cache.locking import any_held

        if not os.path.isdir(self.repo.path):
            return  # already gone: executing again is harmless
        again = "Nothing was deleted; run the command again."
        if any_held(repo_paths(self.repo).locks):
            raise ModelmgrError(f"{self.repo.display_id} is being downloaded right now. {again}")
        fresh = [r for r in scan_cache([self.repo.cache_dir]).find(self.repo.repo_id, self.repo.repo_type)
                 if r.path == self.repo.path]
        planned = _fingerprint(self.repo)
        # A revision that is gone already is fine (executing twice); a new or changed one is not.
        if fresh and any(planned.get(commit) != state for commit, state in _fingerprint(fresh[0]).items()):
            raise ModelmgrError(f"{self.repo.display_id} changed since the plan was made (a pull?). {again}")


def _fingerprint(repo: CachedRepo) -> dict[str, tuple]:
    """What a concurrent pull would change: revisions, their refs, files and sizes."""
    return {r.commit: (tuple(r.sorted_refs), r.nb_files, r.size_on_disk) for r in repo.revisions}


def delete_path(path: Path, *, within: str) -> bool:
    """Delete one entry whose (resolved) parent lies inside ``within``; never follow its link."""
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    within = os.path.realpath(within)
    if parent != within and not parent.startswith(within + os.sep) or os.path.basename(path) in ("", ".", ".."):
        raise ModelmgrError(f"refusing to delete {path}: it is not inside {within}. Nothing outside the repo folder is touched.")
    real_path = os.path.join(parent, os.path.basename(path))
    try:
        mode = os.lstat(real_path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        shutil.rmtree(real_path)  # a real folder: rmtree unlinks the links inside, never follows them
    else:
        os.unlink(real_path)  # a file, or a link (the link goes, its target stays)
    return True


def _prune_empty_parents(folder: Path, *, stop: Path) -> None:
    """Remove folders left empty (refs/pr/, .no_exist/{commit}/sub/) up to, not including, ``stop``."""
    while folder != stop and stop in folder.parents:
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = folder.parent


def resolve_revision(repo: CachedRepo, revision: str) -> CachedRevision:
    """A ref name, a full commit or a unique prefix of at least 7 hex digits -> the cached revision."""
    for candidate in repo.revisions:
        if revision in candidate.refs:
            return candidate
    lowered = revision.lower()
    for candidate in repo.revisions:
        if candidate.commit == lowered:
            return candidate
    cached = ", ".join(r.label for r in repo.revisions) or "none"
    if len(lowered) >= MIN_PREFIX and _HEX.fullmatch(lowered):
        matches = [r for r in repo.revisions if r.commit.startswith(lowered)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotCached(
                f"revision {revision!r} of {repo.display_id} is ambiguous: it starts {len(matches)} cached commits "
                f"({', '.join(r.label for r in matches)}). Give more digits."
            )
    hint = " A commit prefix needs at least 7 hex digits." if _HEX.fullmatch(lowered) and len(lowered) < MIN_PREFIX else ""
    raise NotCached(f"revision {revision!r} of {repo.display_id} is not cached. Cached revisions: {cached}.{hint}")


def _writable_copy(info: CacheInfo, repo_id: str, repo_type: str) -> CachedRepo:
    copies = info.find(repo_id, repo_type)
    writable = [repo for repo in copies if not repo.read_only]
    if len({repo.repo_id for repo in writable}) > 1:
        # Two spellings of one id (models--Org--X and models--org--x) and neither is the one asked
        # for: deleting either could be the wrong model.
        spellings = ", ".join(sorted(_display(repo.repo_id, repo_type) for repo in writable))
        raise ModelmgrError(
            f"{_display(repo_id, repo_type)} is ambiguous: the cache holds {spellings}, which differ only in case. "
            "Name the one to remove exactly as `modelmgr list` shows it."
        )
    if writable:
        return writable[0]
    display = _display(repo_id, repo_type)
    if copies:
        where = ", ".join(str(repo.cache_dir) for repo in copies)
        raise ModelmgrError(
            f"{display} is only in the read-only cache {where} (from cache.dirs); modelmgr removes only from "
            f"its own cache {info.cache_dirs[0]}. Remove it there with huggingface_hub (HF_HUB_CACHE={copies[0].cache_dir} hf cache rm ...) or ask its owner."
        )
    import difflib

    known = sorted({repo.display_id for repo in info.repos})
    close = difflib.get_close_matches(display, known, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = info.cache_dirs[0] if info.cache_dirs else "the cache"
    raise NotCached(f"{display} is not in the cache ({where}).{hint} Run `modelmgr list` to see what is cached.")


def plan_removal(info: CacheInfo, repo_id: str, *, revision: str | None, repo_type: str = "model") -> RemovalPlan:
    """Plan removing one revision (a commit, a unique commit prefix of 7+ hex digits, a branch or a
    tag), or the whole repo when ``revision`` is None. Raises NotCached with what is cached."""
    return plan_removals(info, [(repo_id, revision, repo_type)])[0]


def plan_removals(info: CacheInfo, requests: Iterable[tuple[str, str | None, str]]) -> tuple[RemovalPlan, ...]:
    """Plan several removals at once, ``(repo_id, revision or None, repo_type)`` each. Requests for
    the same repo merge into one plan, so blobs shared only by revisions that all go are freed."""
    chosen: dict[Path, tuple[CachedRepo, set[str] | None]] = {}
    for repo_id, revision, repo_type in requests:
        repo = _writable_copy(info, repo_id, repo_type)
        previous = chosen.get(repo.path, (repo, set()))[1]
        if revision is None or previous is None:
            chosen[repo.path] = (repo, None)
        else:
            previous.add(resolve_revision(repo, revision).commit)
            chosen[repo.path] = (repo, previous)
    return tuple(_plan(info, repo, commits) for repo, commits in chosen.values())


def _plan(info: CacheInfo, repo: CachedRepo, commits: set[str] | None) -> RemovalPlan:
    going = tuple(r for r in repo.revisions if commits is None or r.commit in commits)
    staying = tuple(r for r in repo.revisions if commits is not None and r.commit not in commits)
    blob_by_path = {blob.path: blob for blob in repo.blobs}
    notes: list[str] = []
    outside = sorted({f.blob_path for r in going for f in r.files if blob_by_path[f.blob_path].where == OUTSIDE})
    if outside:
        notes.append(
            f"{len(outside)} file(s) link outside the repo's blobs/ (for example {outside[0]}); the links go, their targets stay."
        )
    others = [copy.cache_dir for copy in info.find(repo.repo_id, repo.repo_type) if copy.read_only]
    if others:
        notes.append(f"a copy stays in the read-only cache {others[0]}.")

    if not staying:
        freed: dict[tuple[int, int], int] = {}
        shared_links = 0
        for blob in repo.blobs:
            if blob.where == OUTSIDE:
                continue
            if blob.is_link:
                shared_links += 1
            else:
                freed[blob.inode] = blob.size
        extra = sum(size for _, size in repo.incomplete_blobs) + sum(size for _, size in repo.unreferenced_blobs)
        if shared_links:
            notes.append(f"{shared_links} blob(s) link into huggingface_hub's shared blob store; that store keeps their content.")
        if os.path.islink(repo.path):
            notes.append(f"{repo.path} is a link: the link goes, the folder it points to stays.")
        if repo.incomplete_blobs:
            notes.append(f"{len(repo.incomplete_blobs)} partial download(s) go too.")
        locks = repo_paths(repo).locks
        return RemovalPlan(
            repo=repo,
            revisions=going,
            whole_repo=True,
            repo_folder=repo.path,
            lock_folder=locks if os.path.lexists(locks) else None,
            freed_bytes=sum(freed.values()) + extra,
            notes=tuple(notes),
        )

    kept_paths = {f.blob_path for r in staying for f in r.files}
    going_paths = {f.blob_path for r in going for f in r.files}
    freed = {}
    blobs = []
    kept = 0
    for path in sorted(going_paths):
        blob = blob_by_path[path]
        if blob.where == IN_SNAPSHOT:  # a copy inside the snapshot: it goes with the snapshot folder
            freed[blob.inode] = blob.size
        elif blob.where == IN_BLOBS:
            if path in kept_paths:
                kept += 1
                continue
            blobs.append(Path(path))
            if not blob.is_link:
                freed[blob.inode] = blob.size
    # Content still reachable through a kept revision (a hard link, a second name) is not freed.
    for path in kept_paths:
        freed.pop(blob_by_path[path].inode, None)
    refs_dir = Path(repo.path, REFS)
    no_exist_dir = Path(repo.path, NO_EXIST)
    layout = repo_paths(repo)
    return RemovalPlan(
        repo=repo,
        revisions=going,
        whole_repo=False,
        refs=tuple(refs_dir / ref for r in going for ref in r.sorted_refs),
        snapshots=tuple(r.snapshot_path for r in going if os.path.lexists(r.snapshot_path)),
        blobs=tuple(blobs),
        no_exist=tuple(no_exist_dir / r.commit for r in going if os.path.lexists(no_exist_dir / r.commit)),
        manifests=tuple(p for p in (layout.manifest(r.commit) for r in going) if os.path.lexists(p)),
        freed_bytes=sum(freed.values()),
        kept_blobs=kept,
        notes=tuple(notes),
    )

