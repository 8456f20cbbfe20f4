"""Re-hash a cache: every blob against its name, every snapshot against its manifest; repair what is bad.

A blob's name is its etag, so it is its own checksum: sha256 for 64 hex digits (LFS files), the
git blob sha1 for 40 (``hashing.hash_file``). On top of the hashes the check reports

- *corrupt* blobs (content that does not hash to the name, or cannot be read), and snapshot files
  that point at another blob than the manifest says;
- *missing* files: broken snapshot links, links that lead out of the repo's ``blobs/`` (never
  read: what they point at is no verified blob), and files a manifest lists that the snapshot lacks;
- *unexpected* entries in ``blobs/``: neither a 40/64-hex name nor ``*.incomplete``.

Regular files inside snapshots (copies, where links were not possible) are noted, and hashed when
a manifest says what they should be. Hashing reads whole files but restores their access times, so
a verify does not count as a use for ``prune``.

``repair`` deletes corrupt blobs (only inside the repo's own ``blobs/``) and pulls the affected
files again, at their exact commits, from the configured endpoints. Read-only caches are only
checked, never repaired.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from modelmgr.cache.model import IN_BLOBS, CacheInfo, CachedRepo, CachedRevision
from modelmgr.cache.hashing import hash_file
from modelmgr.cache.layout import BLOBS, partial_download, repo_paths
from modelmgr.cache.manifest import read_manifest
from modelmgr.project.names import SHA256, hash_kind, is_etag
from modelmgr.units import format_size

HASH_WORKERS = 4  # hashlib releases the GIL: a few threads keep a fast disk busy


@dataclass(frozen=True)
class CorruptBlob:
    path: str  # the blob (or the copied snapshot file) whose content is wrong
    etag: str  # what it should hash to
    reason: str
    files: tuple[tuple[str, str], ...] = ()  # (commit, path) of the snapshot files that use it

    def to_dict(self) -> dict:
        return {"path": self.path, "etag": self.etag, "reason": self.reason,
                "files": [{"revision": commit, "path": path} for commit, path in self.files]}


@dataclass(frozen=True)
class MissingFile:
    commit: str
    path: str  # relative to the snapshot
    reason: str

    def to_dict(self) -> dict:
        return {"revision": self.commit, "path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class RepoCheck:
    """What re-hashing one cached repo found."""

    repo: CachedRepo
    blobs_checked: int
    bytes_checked: int
    corrupt: tuple[CorruptBlob, ...] = ()
    missing: tuple[MissingFile, ...] = ()
    unexpected: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.unexpected)

    @property
    def damaged_files(self) -> dict[str, set[str]]:
        """commit -> snapshot paths that need fetching again."""
        wanted: dict[str, set[str]] = {}
        for blob in self.corrupt:
            for commit, path in blob.files:
                wanted.setdefault(commit, set()).add(path)
        for item in self.missing:
            wanted.setdefault(item.commit, set()).add(item.path)
        return wanted

    def describe(self) -> list[str]:
        repo = self.repo
        where = " (read-only cache)" if repo.read_only else ""
        if self.ok:
            head = f"{repo.display_id}{where}: OK, {self.blobs_checked} blob(s), {format_size(self.bytes_checked)} verified"
        else:
            counts = [f"{len(items)} {label}" for items, label in
                      ((self.corrupt, "corrupt"), (self.missing, "missing"), (self.unexpected, "unexpected")) if items]
            head = f"{repo.display_id}{where}: {', '.join(counts)} ({self.blobs_checked} blob(s) checked)"
        lines = [head]
        for blob in self.corrupt:
            used = ", ".join(f"{path} @ {commit[:8]}" for commit, path in blob.files) or "no snapshot uses it"
            lines.append(f"  corrupt     {blob.path}: {blob.reason} ({used})")
        for item in self.missing:
            lines.append(f"  missing     {item.path} @ {item.commit[:8]}: {item.reason}")
        for path in self.unexpected:
            lines.append(f"  unexpected  {path}: not a blob (a blob is named by its 40 or 64 hex digit etag); remove it by hand")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines

    def to_dict(self) -> dict:
        return {
            **self.repo.identity(),
            "read_only": self.repo.read_only,
            "ok": self.ok,
            "blobs_checked": self.blobs_checked,
            "bytes_checked": self.bytes_checked,
            "corrupt": [blob.to_dict() for blob in self.corrupt],
            "missing": [item.to_dict() for item in self.missing],
            "unexpected": list(self.unexpected),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class VerifyReport:
    checks: tuple[RepoCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def counts(self) -> dict[str, int]:
        return {
            "repos": len(self.checks),
            "blobs": sum(c.blobs_checked for c in self.checks),
            "bytes": sum(c.bytes_checked for c in self.checks),
            "corrupt": sum(len(c.corrupt) for c in self.checks),
            "missing": sum(len(c.missing) for c in self.checks),
            "unexpected": sum(len(c.unexpected) for c in self.checks),
        }

    def summary(self) -> str:
        n = self.counts()
        checked = f"{n['blobs']} blob(s), {format_size(n['bytes'])} in {n['repos']} repo(s)"
        if self.ok:
            return f"All well: {checked} verified."
        bad = ", ".join(f"{n[key]} {key}" for key in ("corrupt", "missing", "unexpected") if n[key])
        return f"{bad} in {sum(not c.ok for c in self.checks)} repo(s) ({checked} checked)"

    def describe(self) -> list[str]:
        lines = [line for check in self.checks for line in check.describe()]
        lines.append(self.summary())
        return lines

    def to_dict(self) -> dict:
        return {"ok": self.ok, **self.counts(), "repos_checked": [check.to_dict() for check in self.checks]}


# --- checking ------------------------------------------------------------------------------------


def _hash_keeping_atime(path: str, etag: str) -> tuple[int, str | None, str | None]:
    """(size, digest, error). The access time is put back: verifying is not using."""
    try:
        before = os.stat(path)
    except OSError as exc:
        return 0, None, f"cannot read it: {exc.strerror}"
    try:
        digest = hash_file(path, etag, before.st_size)
    except OSError as exc:
        return before.st_size, None, f"cannot read it: {exc.strerror}"
    try:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError:
        pass  # a read-only cache: its atimes are not ours to keep anyway
    return before.st_size, digest, None


def _algorithm(etag: str) -> str:
    return "sha256" if hash_kind(etag) == SHA256 else "git blob sha1"


def verify_repo(repo: CachedRepo, *, revisions: tuple[CachedRevision, ...] | None = None, workers: int = HASH_WORKERS) -> RepoCheck:
    """Re-hash one repo: every blob in ``blobs/`` (or only those ``revisions`` use), its manifests,
    its snapshot links."""
    chosen = repo.revisions if revisions is None else revisions
    blobs_dir = os.path.join(repo.path, BLOBS)
    paths = repo_paths(repo)
    users: dict[str, list[tuple[str, str]]] = {}
    notes: list[str] = []
    missing: list[MissingFile] = []
    corrupt: list[CorruptBlob] = []
    copies: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []  # (path, etag from the manifest, user)

    for revision in chosen:
        manifest = read_manifest(paths, revision.commit) or {}
        for file in revision.files:
            if file.etag is not None:
                users.setdefault(file.etag, []).append((revision.commit, file.path))
            expected = manifest.get(file.path)
            snapshot_file = os.path.join(revision.snapshot_path, file.path)
            if file.etag is None and os.path.islink(snapshot_file):
                # A link that does not lead into this repo's blobs/: whatever it points at is no
                # verified blob (and may be anyone's file), so it is not read; repair links it again.
                try:
                    target = os.readlink(snapshot_file)
                except OSError:
                    target = "?"
                missing.append(MissingFile(revision.commit, file.path,
                                           f"a link out of the repo's blobs/ (to {target!r}); not read, repair links it to its blob"))
                continue
            if file.etag is None:
                blob = next((b for b in repo.blobs if b.path == file.blob_path), None)
                if blob is not None and blob.where != IN_BLOBS:
                    if expected is not None:
                        copies.append((file.blob_path, expected.etag, ((revision.commit, file.path),)))
                    else:
                        notes.append(f"{file.path} @ {revision.short_commit} is a regular file (a copy, not a link into blobs/); "
                                     "no manifest says what it should hash to")
                continue
            if expected is not None and expected.etag != file.etag:
                corrupt.append(CorruptBlob(
                    os.path.join(revision.snapshot_path, file.path), expected.etag,
                    f"links to blob {file.etag[:12]}, the manifest expects {expected.etag[:12]}",
                    ((revision.commit, file.path),)))
        for path in revision.missing:
            target = os.path.join(revision.snapshot_path, path)
            if os.path.islink(target):
                reason = "broken link: its blob is gone"
            else:
                reason = "listed in the manifest, absent from the snapshot"
            missing.append(MissingFile(revision.commit, path, reason))
        copied = sum(1 for f in revision.files if f.etag is None and not os.path.islink(os.path.join(revision.snapshot_path, f.path)))
        if copied:
            notes.append(f"snapshot {revision.short_commit} holds {copied} regular file(s) instead of links into blobs/")

    # Every entry of blobs/ (for a whole repo), or the blobs the chosen revisions use.
    unexpected: list[str] = []
    to_hash: list[tuple[str, str]] = []
    try:
        with os.scandir(blobs_dir) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except OSError:
        listed = []
    for entry in listed:
        name = entry.name
        partial = partial_download(name)
        if partial is not None and is_etag(partial[1]):
            continue  # a partial download (ours or huggingface_hub's): `modelmgr prune --incomplete` takes it
        if not is_etag(name) or entry.is_dir(follow_symlinks=False):
            if revisions is None:
                unexpected.append(entry.path)
            continue
        if revisions is None or name in users:
            to_hash.append((entry.path, name))
    for path, etag, user in copies:
        to_hash.append((path, etag))
        users.setdefault(path, []).extend(user)

    def check(item: tuple[str, str]) -> tuple[str, str, int, str | None]:
        path, etag = item
        size, digest, error = _hash_keeping_atime(path, etag)
        if error is None and digest != etag:
            error = f"content does not match its {_algorithm(etag)} ({size} bytes hash to {digest[:12]}...)"
        return path, etag, size, error

    checked = 0
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(to_hash) or 1)), thread_name_prefix="verify") as pool:
        for path, etag, size, error in pool.map(check, to_hash):
            checked += size
            if error is not None:
                key = path if os.path.dirname(path) != blobs_dir else etag
                corrupt.append(CorruptBlob(path, etag, error, tuple(users.get(key, ()))))
    return RepoCheck(repo, len(to_hash), checked, tuple(corrupt), tuple(missing), tuple(unexpected), tuple(notes))


def verify_cache(
    info: CacheInfo,
    *,
    select: Callable[[CachedRepo], tuple[CachedRevision, ...] | None | bool] | None = None,
    on_repo: Callable[[int, int, CachedRepo], None] | None = None,
) -> VerifyReport:
    """Verify every repo of a scan, or those ``select`` accepts. ``select`` returns False to skip a
    repo, True or None for all of it, or a tuple of revisions to check only those. ``on_repo`` is
    called before each repo with (position from 1, count, repo), for a progress line."""
    chosen: list[tuple[CachedRepo, tuple[CachedRevision, ...] | None]] = []
    for repo in info.repos:
        picked = True if select is None else select(repo)
        if picked is False:
            continue
        chosen.append((repo, picked if isinstance(picked, tuple) else None))
    checks = []
    for position, (repo, revisions) in enumerate(chosen, start=1):
        if on_repo is not None:
            on_repo(position, len(chosen), repo)
        checks.append(verify_repo(repo, revisions=revisions))
    return VerifyReport(tuple(checks))
