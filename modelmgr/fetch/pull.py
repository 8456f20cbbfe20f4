"""Pull a model: plan (which files, at which commit) -> fetch (parallel, resumable, verified,
with endpoint fallback) -> commit (snapshot links, then refs).

A file appears in the snapshot only after its blob is complete and verified; a ref is written
only after every file of the snapshot is in place.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from modelmgr import errors
from modelmgr.project.config import Config, load_config
from modelmgr.fetch.download import Transfer, fetch_blob
from modelmgr.fetch.events import EventSink, FileFinished, Notice, PlanReady, ignore
from modelmgr.fetch.hub import HubClient, RemoteFile
from modelmgr.fetch.parts import part_size, resumable_bytes
from modelmgr.fsutil import make_dirs, share_new
from modelmgr.cache.layout import RepoPaths, relative_blob_link
from modelmgr.cache.manifest import ManifestEntry, served_from_blob, unsound_files, write_manifest
from modelmgr.cache.store import blob_present
from modelmgr.project.refs import ModelRef, is_commit, parse_ref
from modelmgr.fetch.quants import quant_of
from modelmgr.fetch.selection import select
from modelmgr.units import format_size

DISK_MARGIN = 64 * 1024 * 1024  # keep at most this much free beyond what the pull needs...
MIN_DISK_MARGIN = 1024 * 1024  # ...and at least this (filesystem metadata, the state files)


def disk_margin(needed: int) -> int:
    """Room to leave free beyond the bytes a pull fetches: a tenth of them, within bounds.

    A fixed 64 MB refused a 650 kB pull on a disk with 42 MB free; scaled, a small pull needs
    little slack and a big one still leaves room for the rest of the system."""
    return max(MIN_DISK_MARGIN, min(DISK_MARGIN, needed // 10))


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    commit: str
    revision: str
    path: Path
    repo_type: str = "model"


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    etag: str
    lfs: bool
    cached: bool  # its blob is there and the snapshot file is a link to it (or a copy, without links)
    partial_bytes: int = 0
    have_blob: bool = False  # the blob is there, only the snapshot file is to be linked (again)


@dataclass(frozen=True)
class PullPlan:
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    cache_dir: Path
    files: tuple[PlannedFile, ...]
    skipped: tuple[str, ...]
    endpoint: str
    note: str | None = None  # why these files: the GGUF quantization taken and the rule that chose it

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fetch_bytes(self) -> int:
        return sum(f.size - f.partial_bytes for f in self.files if not (f.cached or f.have_blob))

    @property
    def to_fetch(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if not f.cached)


@dataclass(frozen=True)
class PullResult:
    plan: PullPlan | None
    snapshot: Snapshot
    downloaded: int = 0  # files fetched now
    reused: int = 0  # files already in the cache
    seconds: float = 0.0
    dry_run: bool = False


def _as_ref(ref: str | ModelRef, config: Config) -> ModelRef:
    parsed = parse_ref(ref, aliases=config.aliases()) if isinstance(ref, str) else ref
    if parsed.is_local:
        raise errors.InvalidReference(f"{parsed} is a local directory: there is nothing to pull; run or load it directly.")
    return parsed


def find_cached(ref: ModelRef, config: Config, *, repo_type: str = "model") -> Snapshot | None:
    """A complete cached snapshot for ``ref`` in any cache directory, without the network."""
    revision = ref.revision_or_default
    for cache_dir in config.cache_dirs:
        paths = RepoPaths(cache_dir, ref.repo_id, repo_type)
        commit = revision if is_commit(revision) else paths.read_ref(revision)
        if commit is None or not paths.snapshot(commit).is_dir():
            continue
        if unsound_files(paths, commit):
            continue  # a file is absent, or a link that does not lead to its own blob: pull links it again
        if ref.quant and not any(quant_of(f.name) == ref.quant for f in paths.snapshot(commit).glob("*.gguf")):
            continue  # another quantization of this commit is cached, not the one asked for
        return Snapshot(ref.repo_id, commit, revision, paths.snapshot(commit), repo_type)
    return None


def ensure_snapshot(
    ref: ModelRef | str, config: Config | None = None, *, on_event: EventSink = ignore, free_memory: int | None = None,
) -> Snapshot:
    """The cached snapshot for ``ref``, pulling it first when it is not complete in the cache.

    A cached model is used as is, without asking the Hub for updates (``pull`` does that).
    """
    config = config or load_config()
    ref = _as_ref(ref, config)
    cached = find_cached(ref, config)
    if cached is not None:
        return cached
    return pull(ref, config=config, on_event=on_event, free_memory=free_memory).snapshot


def pull(
    ref: ModelRef | str,
    *,
    config: Config | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    all_files: bool = False,
    dry_run: bool = False,
    connections: int | None = None,
    repo_type: str = "model",
    on_event: EventSink = ignore,
    free_memory: int | None = None,
) -> PullResult:
    """Download what a load needs for ``ref`` into the cache and return its snapshot: what
    ``from_pretrained`` needs, or one GGUF quantization (``ref``'s tag, else the default rule,
    which weighs the quantizations against ``free_memory`` in bytes; None: unknown)."""
    started = time.monotonic()
    config = config or load_config()
    ref = _as_ref(ref, config)
    if config.offline:
        cached = find_cached(ref, config, repo_type=repo_type)
        if cached is None:
            raise errors.OfflineError(
                f"{ref} is not in the cache and offline mode is on (HF_HUB_OFFLINE or --offline): "
                "pull it while online, or unset HF_HUB_OFFLINE.")
        return PullResult(None, cached, dry_run=dry_run)

    client = HubClient(config, on_warning=lambda message: on_event(Notice(message)))
    plan = plan_pull(client, ref, config, include=include, exclude=exclude, all_files=all_files, repo_type=repo_type, free_memory=free_memory)
    paths = RepoPaths(plan.cache_dir, plan.repo_id, repo_type)
    snapshot = Snapshot(plan.repo_id, plan.commit, plan.revision, paths.snapshot(plan.commit), repo_type)
    if dry_run:
        return PullResult(plan, snapshot, dry_run=True)
    if plan.note and ref.quant is None:  # the rule chose: say which, and how to choose another
        on_event(Notice(plan.note))

    if config.max_cache_size is not None and plan.fetch_bytes:
        from modelmgr.cache.prune import prune_to_fit  # only teams that cap their cache pay for the planner

        prune_to_fit(config, plan.fetch_bytes, keep=[plan.repo_id], notify=lambda line: on_event(Notice(line)))
    # Everything this pull writes lies below these folders: none may be a planted link.
    paths.refuse_linked_folders(paths.manifests, paths.snapshot(plan.commit), paths.refs, paths.blobs, paths.locks)
    check_free_space(plan)
    on_event(PlanReady(plan.fetch_bytes, len(plan.to_fetch)))
    write_manifest(paths, plan.repo_id, plan.commit, [ManifestEntry(f.path, f.size, f.etag) for f in plan.files])
    transfer = Transfer(
        client=client, paths=paths, repo_id=plan.repo_id, commit=plan.commit, repo_type=repo_type,
        endpoints=config.endpoints, connections=connections or config.connections,
        slots=threading.Semaphore(connections or config.connections), emit=on_event,
        part_size=part_size(plan.fetch_bytes, connections or config.connections),
    )
    downloaded = _fetch_all(transfer, plan)
    if not is_commit(plan.revision):
        paths.write_ref(plan.revision, plan.commit)
    return PullResult(plan, snapshot, downloaded=downloaded, reused=len(plan.files) - downloaded,
                      seconds=time.monotonic() - started)


def plan_pull(
    client: HubClient,
    ref: ModelRef,
    config: Config,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    all_files: bool = False,
    repo_type: str = "model",
    free_memory: int | None = None,
) -> PullPlan:
    revision = ref.revision_or_default
    if is_commit(revision):
        commit, endpoint = revision, config.endpoints[0]
    else:
        commit, endpoint = client.resolve_commit(ref.repo_id, revision, repo_type)
    remote_files, endpoint = client.list_files(ref.repo_id, commit, repo_type)
    by_path = {f.path: f for f in remote_files}
    selection = select({path: f.size for path, f in by_path.items()}, quant=ref.quant, include=include, exclude=exclude,
                       all_files=all_files, free_memory=free_memory, repo=ref.repo_id)
    chosen = selection.files
    if not chosen:
        raise errors.EntryNotFound(
            f"no file of {ref.repo_id}@{commit[:8]} matches the selection: check --include / --exclude "
            f"(the repo has: {', '.join(sorted(by_path)[:8])}{', ...' if len(by_path) > 8 else ''}).")
    paths = RepoPaths(config.cache_dir, ref.repo_id, repo_type)
    planned = tuple(_plan_file(paths, commit, by_path[path]) for path in chosen)
    skipped = tuple(sorted(set(by_path) - set(chosen)))
    return PullPlan(ref.repo_id, repo_type, revision, commit, config.cache_dir, planned, skipped, endpoint.name, selection.note)


def _plan_file(paths: RepoPaths, commit: str, remote: RemoteFile) -> PlannedFile:
    have_blob = blob_present(paths.blob(remote.etag), remote.size)
    # Cached only when what the snapshot serves is that blob: a link out of the cache (or to
    # another blob) is as good as missing, and gets linked to the verified blob again.
    cached = have_blob and bool(served_from_blob(paths, commit, remote.path, remote.etag))
    # What the download will really keep (the resume state, not the possibly sparse file's size,
    # and nothing for small files, which restart): dry-run and the free-space check use it.
    partial = 0 if have_blob else resumable_bytes(paths, remote.etag, remote.size)
    return PlannedFile(remote.path, remote.size, remote.etag, remote.lfs, cached, partial, have_blob)


def check_free_space(plan: PullPlan) -> None:
    make_dirs(plan.cache_dir)
    free = shutil.disk_usage(plan.cache_dir).free
    needed = plan.fetch_bytes
    margin = disk_margin(needed)
    if needed + margin > free and needed > 0:
        # Name the margin when it is what does not fit: "needs 8 MB, 9 MB is free" reads as a contradiction.
        extra = f" plus a safety margin of {format_size(margin)}" if needed <= free else ""
        raise errors.DiskSpaceError(
            f"not enough free space in {plan.cache_dir}: the pull needs {format_size(needed)} more{extra}, "
            f"{format_size(free)} is free. Free space (modelmgr prune, modelmgr rm) or point HF_HUB_CACHE at a larger disk.")


def _fetch_all(transfer: Transfer, plan: PullPlan) -> int:
    """Fetch every missing blob (largest first, so big transfers overlap) and link each file."""
    remotes = [RemoteFile(f.path, f.size, f.etag, f.lfs) for f in plan.files]
    in_place = {f.path for f in plan.files if f.cached}
    downloaded = 0
    failures: list[BaseException] = []
    lock = threading.Lock()

    def one(remote: RemoteFile) -> None:
        nonlocal downloaded
        try:
            fetched = fetch_blob(transfer, remote)
            link_snapshot_file(transfer.paths, plan.commit, remote)
            transfer.emit(FileFinished(remote.path, remote.size, reused=not fetched and remote.path in in_place))
            if fetched:
                with lock:
                    downloaded += 1
        except BaseException as exc:  # collected: other files go on, so a rerun has less to do
            failures.append(exc)

    order = sorted(remotes, key=lambda r: r.size, reverse=True)
    workers = max(1, min(transfer.connections, len(order)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
    try:
        list(pool.map(one, order))
    except BaseException:
        # Ctrl-C: stop every transfer at its next buffer (each saves its resume state) instead
        # of waiting, as a plain `with` would, for every file in flight to finish downloading.
        transfer.stopped.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if failures:
        for exc in failures:
            if isinstance(exc, (KeyboardInterrupt, errors.DiskSpaceError, errors.UnsafeServerResponse)):
                raise exc
        raise failures[0]
    return downloaded


def link_snapshot_file(paths: RepoPaths, commit: str, remote: RemoteFile) -> None:
    """Point ``snapshots/{commit}/{path}`` at its blob, atomically, as huggingface_hub does."""
    link = paths.snapshot(commit) / remote.path
    blob = paths.blob(remote.etag)
    target = relative_blob_link(link, blob)
    # A link planted in place of a snapshot folder would resolve ours elsewhere, or take the new
    # link outside the cache. The file itself is replaced, never followed: a link out of the cache
    # is swapped for ours, and what it pointed at is neither read nor written.
    paths.refuse_linked_folders(link.parent)
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    make_dirs(link.parent)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        os.symlink(target, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)  # filesystems without symlinks get copies, like huggingface_hub
        share_new(tmp)
    os.replace(tmp, link)



