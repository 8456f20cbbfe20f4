"""Evicting from the cache by policy: plan (what goes and why, what it frees), show, then execute.

Policies combine; each names what it may take from the *writable* cache (``config.cache_dir``),
never from the read-only extra caches:

- ``max_size``: whole models, least recently used first, until the cache fits.
- ``older_than``: whole models not used for that long.
- ``detached``: revisions no ref points to.
- ``incomplete``: partial downloads, their resume state and what killed pulls left (``partials.py``).
- ``orphans``: blobs no snapshot points to.

"Used" is what ``run`` and ``load`` record (``recency``). A model with no record falls back to its
file times, newest of access and modification. A later pull counts as a use too, so a model just
pulled is never the first to go.

Models pinned in the config (``[models.*]``) or in the project's ``modelmgr.lock`` are never taken
by the first three policies; the plan says "kept (pinned)" where a pin made the difference. Their
partial downloads and orphan blobs are garbage like any other and may go.

A cache is shared by concurrent pulls, so a repo with a download in progress (a held blob lock)
is left alone, an orphan blob younger than ``grace`` seconds is kept (a pull links blobs just
after it finishes them), and every partial download is deleted only while holding its lock.

``plan_prune`` is a pure function of a scan, the last-use map, the pinned set and ``now``;
``collect`` gathers those from a config, and ``prune_to_fit`` is what a pull calls when
``[cache] max_size`` is set.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable, Mapping

from modelmgr.cache.model import CacheInfo, CachedRepo
from modelmgr.cache.scan import scan_cache
from modelmgr.errors import DiskSpaceError
from modelmgr.cache.layout import partial_download, repo_paths
from modelmgr.cache.partials import INCOMPLETE, ORPHAN, PARTIAL_STATE, UNFINISHED, Leftover, find_leftovers, lock_free, remove
from modelmgr.cache.removal import RemovalPlan, plan_removals
from modelmgr.project.lockfile import pinned_models
from modelmgr.project.names import is_etag
from modelmgr.units import format_age, format_size

# A blob or revision written this recently may belong to a pull still linking its snapshot.
GRACE_SECONDS = 600.0

__all__ = ["INCOMPLETE", "ORPHAN", "PARTIAL_STATE", "UNFINISHED", "Leftover", "PrunePlan", "plan_prune", "collect", "prune_to_fit"]


@dataclass(frozen=True)
class Eviction:
    """Revisions of one repo (or all of it) that go, and why."""

    plan: RemovalPlan
    reasons: tuple[str, ...]
    last_used: float
    recorded: bool  # last_used comes from a recorded run/load (else from file times)

    @property
    def freed_bytes(self) -> int:
        return self.plan.freed_bytes


@dataclass(frozen=True)
class Kept:
    """Something a policy would have taken, and why it stays."""

    display_id: str
    reason: str  # "pinned", "a download is in progress", ...
    detail: str = ""

    def line(self) -> str:
        return f"{self.display_id}: kept ({self.reason}){': ' + self.detail if self.detail else ''}"


@dataclass(frozen=True)
class PrunePlan:
    """What pruning the writable cache deletes and frees. Nothing happens until ``execute()``."""

    cache_dir: Path
    policies: tuple[str, ...]  # for people: "max size 50.0 GB", "unused for 30d", ...
    evictions: tuple[Eviction, ...]
    leftovers: tuple[Leftover, ...]
    kept: tuple[Kept, ...]
    size_before: int  # the writable cache: blobs once each, plus partial downloads and orphans
    max_size: int | None = None
    now: float = field(default=0.0, compare=False)

    @property
    def freed_bytes(self) -> int:
        return sum(e.freed_bytes for e in self.evictions) + sum(item.size for item in self.leftovers)

    @property
    def freed_str(self) -> str:
        return format_size(self.freed_bytes)

    @property
    def size_after(self) -> int:
        return max(0, self.size_before - self.freed_bytes)

    @property
    def fits(self) -> bool:
        return self.max_size is None or self.size_after <= self.max_size

    @property
    def empty(self) -> bool:
        return not self.evictions and not self.leftovers

    def describe(self) -> list[str]:
        """Lines for a person: every eviction with its reason, leftovers, what was kept, the sizes."""
        lines: list[str] = []
        for eviction in self.evictions:
            detail = eviction.plan.describe()
            lines.append(f"{detail[0]}; {'; '.join(eviction.reasons)}")
            lines.extend(detail[1:])
        by_repo: dict[str, list[Leftover]] = {}
        for item in self.leftovers:
            by_repo.setdefault(item.repo.display_id, []).append(item)
        for display_id, items in by_repo.items():
            lines.append(f"{display_id}: {len(items)} leftover file(s), frees {format_size(sum(i.size for i in items))}")
            for item in items:
                lines.append(f"  {item.kind:<16} {item.path} ({format_size(item.size)})")
        lines.extend(kept.line() for kept in self.kept)
        limit = f" (limit {format_size(self.max_size)})" if self.max_size is not None else ""
        lines.append(f"Cache {self.cache_dir}: {format_size(self.size_before)} -> {format_size(self.size_after)}{limit}")
        if not self.fits:
            lines.append(
                "It stays over the limit: only pinned or busy models are left. Unpin some (modelmgr.toml, modelmgr.lock), "
                "remove them with `modelmgr rm`, or raise the limit."
            )
        return lines

    def to_dict(self) -> dict:
        return {
            "cache_dir": str(self.cache_dir),
            "policies": list(self.policies),
            "size_before": self.size_before,
            "size_after": self.size_after,
            "max_size": self.max_size,
            "fits": self.fits,
            "freed_bytes": self.freed_bytes,
            "evictions": [
                {**e.plan.to_dict(), "reasons": list(e.reasons), "last_used": _iso(e.last_used),
                 "last_used_source": "recorded" if e.recorded else "file times"}
                for e in self.evictions
            ],
            "leftovers": [item.to_dict() for item in self.leftovers],
            "kept": [{"id": k.display_id, "reason": k.reason, "detail": k.detail} for k in self.kept],
        }

    def execute(self, *, on_skip: Callable[[str], None] | None = None) -> int:
        """Delete what the plan lists; return the bytes actually freed. A partial download whose
        lock another process holds (a pull resumed it since the plan) is skipped, not deleted."""
        freed = 0
        for eviction in self.evictions:
            freed += eviction.plan.execute()
        for item in self.leftovers:
            freed += remove(item, on_skip)
        return freed


def _iso(timestamp: float) -> str | None:
    if not timestamp:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def download_in_progress(repo: CachedRepo) -> bool:
    """Whether some process is downloading into this repo right now (holds a blob lock), be it a
    modelmgr pull or huggingface_hub's snapshot_download: both lock ``{etag}.lock``."""
    paths = repo_paths(repo)
    for path, _ in repo.incomplete_blobs:
        partial = partial_download(os.path.basename(path))
        if partial is not None and is_etag(partial[1]) and not lock_free(paths, partial[1]):
            return True
    return False


def last_use(repo: CachedRepo, recorded: Mapping[str, float]) -> tuple[float, bool]:
    """(when the repo was last used, whether that was recorded). A recorded use competes only
    with the repo's last pull (file modification); without one, file access times count too."""
    mark = recorded.get(repo.folder_name)
    if mark is not None:
        return max(mark, repo.last_modified), True
    return max(repo.last_accessed, repo.last_modified), False


def _age(now: float, timestamp: float) -> str:
    return format_age(now - timestamp) if timestamp else "never"


def plan_prune(
    info: CacheInfo,
    *,
    last_used: Mapping[str, float],
    pinned: Collection[str],
    now: float,
    max_size: int | None = None,
    older_than: float | None = None,
    detached: bool = False,
    incomplete: bool = False,
    orphans: bool = False,
    busy: Collection[str] = (),
    keep: Collection[str] = (),
    grace: float = GRACE_SECONDS,
) -> PrunePlan:
    """Plan pruning the writable cache of ``info`` (its first directory).

    ``last_used`` maps repo folder names (``models--org--name``) to recorded uses, as
    ``recency.all_last_used`` returns them; ``pinned`` and ``keep`` hold repo IDs that the
    eviction policies never take (compared case-insensitively); ``busy`` holds repo folder paths
    with a download in progress, which every policy leaves alone.
    """
    cache_dir = info.cache_dirs[0] if info.cache_dirs else Path()
    repos = [repo for repo in info.repos if repo.cache_dir == cache_dir and not repo.read_only]
    pinned_ids = {repo_id.lower() for repo_id in pinned}
    keep_ids = {repo_id.lower() for repo_id in keep}
    busy_paths = {str(path) for path in busy}
    policies = []
    if max_size is not None:
        policies.append(f"max size {format_size(max_size)}")
    if older_than is not None:
        policies.append(f"unused for {format_age(older_than).removesuffix(' ago')}")
    if detached:
        policies.append("detached revisions")
    if incomplete:
        policies.append("partial downloads")
    if orphans:
        policies.append("orphan blobs")

    kept: list[Kept] = []
    uses = {repo.path: last_use(repo, last_used) for repo in repos}

    def protected(repo: CachedRepo, what: str) -> bool:
        """Whether the eviction policies must leave ``repo`` alone (and say so once)."""
        reason = None
        if str(repo.path) in busy_paths:
            reason = "a download is in progress"
        elif repo.repo_id.lower() in keep_ids:
            reason = "being pulled"
        elif repo.repo_id.lower() in pinned_ids:
            reason = "pinned"
        if reason is None:
            return False
        if not any(k.display_id == repo.display_id and k.reason == reason for k in kept):
            kept.append(Kept(repo.display_id, reason, what))
        return True

    whole: dict[Path, list[str]] = {}  # repo path -> reasons
    commits: dict[Path, tuple[set[str], list[str]]] = {}
    if older_than is not None:
        for repo in repos:
            used, _ = uses[repo.path]
            if now - used > older_than and not protected(repo, f"last used {_age(now, used)}"):
                whole[repo.path] = [f"unused for {format_age(now - used).removesuffix(' ago')}"]
    if detached:
        for repo in repos:
            if repo.path in whole:
                continue
            loose = {r.commit for r in repo.revisions if not r.refs}
            if loose and not protected(repo, f"{len(loose)} detached revision(s)"):
                commits[repo.path] = (loose, ["detached (no branch or tag points to it)"])

    by_path = {repo.path: repo for repo in repos}
    leftovers: dict[Path, list[Leftover]] = {}
    young = 0
    if incomplete or orphans:
        for repo in repos:
            if str(repo.path) in busy_paths:
                protected(repo, "partial downloads and orphans")
                continue
            found, too_young = find_leftovers(repo, incomplete=incomplete, orphans=orphans, now=now, grace=grace)
            young += too_young
            if found:
                leftovers[repo.path] = found

    def freed_by(path: Path) -> int:
        """What the current choice for one repo frees (a whole repo frees its leftovers too)."""
        repo = by_path[path]
        if path in whole:
            return plan_removals(info, [(repo.repo_id, None, repo.repo_type)])[0].freed_bytes
        total = sum(item.size for item in leftovers.get(path, ()))
        if path in commits:
            total += _revision_plan(info, repo, commits[path][0]).freed_bytes
        return total

    size_before = _cache_size(repos)
    if max_size is not None:
        size = size_before - sum(freed_by(repo.path) for repo in repos)
        for repo in sorted(repos, key=lambda r: (uses[r.path][0], r.display_id.lower())):
            if size <= max_size:
                break
            if repo.path in whole:
                continue
            used, _ = uses[repo.path]
            if protected(repo, f"last used {_age(now, used)}"):
                continue
            before = freed_by(repo.path)
            whole[repo.path] = [f"least recently used (last used {_age(now, used)})"]
            size -= freed_by(repo.path) - before

    evictions: list[Eviction] = []
    final_leftovers: list[Leftover] = []
    for repo in repos:
        path = repo.path
        used, recorded = uses[path]
        if path in whole:
            plan = plan_removals(info, [(repo.repo_id, None, repo.repo_type)])[0]
            evictions.append(Eviction(plan, tuple(whole[path]), used, recorded))
            continue  # the repo folder goes, leftovers with it
        if path in commits:
            plan = _revision_plan(info, repo, commits[path][0])
            evictions.append(Eviction(plan, tuple(commits[path][1]), used, recorded))
            if plan.whole_repo:
                continue
        final_leftovers.extend(leftovers.get(path, ()))
    if young:
        kept.append(Kept(f"{young} orphan blob(s)", f"written in the last {format_age(grace).removesuffix(' ago')}",
                         "a pull may be about to link them"))
    evictions.sort(key=lambda e: (e.last_used, e.plan.repo.display_id.lower()))
    return PrunePlan(
        cache_dir=cache_dir,
        policies=tuple(policies),
        evictions=tuple(evictions),
        leftovers=tuple(final_leftovers),
        kept=tuple(kept),
        size_before=size_before,
        max_size=max_size,
        now=now,
    )


def _revision_plan(info: CacheInfo, repo: CachedRepo, commits: Iterable[str]) -> RemovalPlan:
    plans = plan_removals(info, [(repo.repo_id, commit, repo.repo_type) for commit in sorted(commits)])
    return plans[0]


def _cache_size(repos: Iterable[CachedRepo]) -> int:
    """Blobs once each, plus what sits in blobs/ outside any snapshot (partials, orphans)."""
    seen: dict[tuple[int, int], int] = {}
    extra = 0
    for repo in repos:
        seen.update(repo.content)
        extra += sum(size for _, size in repo.incomplete_blobs) + sum(size for _, size in repo.unreferenced_blobs)
    return sum(seen.values()) + extra


# --- gathering the inputs from a config ---------------------------------------------------------


def collect(config, **policies) -> tuple[PrunePlan, CacheInfo]:
    """Scan the writable cache and plan with the config's pins and the recorded uses."""
    from modelmgr.cache.recency import all_last_used

    cache_dir = config.cache_dir
    info = scan_cache([cache_dir])
    busy = [str(repo.path) for repo in info.repos if repo.incomplete_blobs and download_in_progress(repo)]
    plan = plan_prune(
        info,
        last_used=all_last_used(Path(cache_dir)),
        pinned=pinned_models(config),
        now=policies.pop("now", None) or time.time(),
        busy=busy,
        **policies,
    )
    return plan, info


def prune_to_fit(config, incoming_bytes: int, *, keep: Collection[str] = (), now: float | None = None,
                 notify: Callable[[str], None] | None = None) -> int:
    """Evict least recently used models so that ``incoming_bytes`` more fit under ``[cache]
    max_size``; return the bytes freed (0 when no limit is set or everything fits already).

    ``keep``: repo IDs never evicted here (the one being pulled). Raises DiskSpaceError, deleting
    nothing, when even evicting every unpinned model would not make room. ``notify`` receives one
    line per eviction.
    """
    limit = config.max_cache_size
    if limit is None:
        return 0
    target = limit - max(0, int(incoming_bytes))
    if target < 0:
        raise DiskSpaceError(
            f"the pull needs {format_size(incoming_bytes)}, more than the whole cache limit ([cache] max_size = "
            f"{format_size(limit)}). Raise max_size (or MODELMGR_CACHE_MAX_SIZE), or pull fewer files with --include."
        )
    plan, _ = collect(config, max_size=target, keep=keep, now=now)
    if not plan.fits:
        kept = ", ".join(sorted({k.display_id for k in plan.kept})) or "none"
        raise DiskSpaceError(
            f"the pull needs {format_size(incoming_bytes)} but the cache cannot get under its limit ([cache] max_size = "
            f"{format_size(limit)}) even after evicting every unpinned model: {format_size(plan.size_after)} stays "
            f"(kept: {kept}). Nothing was deleted. Raise max_size, unpin models, or remove some with `modelmgr rm`."
        )
    if plan.empty:
        return 0
    freed = plan.execute()
    if notify is not None:
        for eviction in plan.evictions:
            notify(f"evicted {eviction.plan.repo.display_id} ({format_size(eviction.freed_bytes)}; {'; '.join(eviction.reasons)}) "
                   f"to stay under [cache] max_size {format_size(limit)}")
    return freed

