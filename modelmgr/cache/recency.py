"""When each model was last run or loaded, for ``list`` and for ``prune``'s LRU eviction.

The store is one empty marker file per repo under ``{cache}/.modelmgr/last-used/``, and the time
is its mtime. Recording a use is a single ``utime`` (or a create), so any number of
processes and users can record at once without a lock and nothing can be half-written. It lives in
the cache, not in a home folder, because a shared cache must be evicted by everyone's use.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from modelmgr.errors import ModelmgrError
from modelmgr.fsutil import make_dirs, open_shared
from modelmgr.cache.layout import LAST_USED, MODELMGR_DIR, folder_name

STORE = Path(MODELMGR_DIR) / LAST_USED


def _marker(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache_dir / STORE / folder_name(repo_id, repo_type)


def record_use(cache_dir: Path, repo_id: str, repo_type: str = "model", *, when: float | None = None) -> None:
    """Note that the model was used now. A read-only cache is simply not recorded in."""
    marker = _marker(cache_dir, repo_id, repo_type)
    try:
        make_dirs(marker.parent)
        # "Now" needs only write permission on a marker another user of a shared cache created;
        # an explicit time would need its ownership.
        times = None if when is None else (when, when)
        try:
            if not stat.S_ISREG(os.lstat(marker).st_mode):
                os.unlink(marker)  # a link planted as a marker would have us touch (or create) its target
            os.utime(marker, times, follow_symlinks=False)
        except FileNotFoundError:
            os.close(open_shared(marker, os.O_WRONLY | os.O_CREAT, own=False))
            os.utime(marker, times, follow_symlinks=False)
    except (OSError, ModelmgrError):
        pass  # usage tracking must never stop a model from running


def last_used(cache_dir: Path, repo_id: str, repo_type: str = "model") -> float | None:
    try:
        return os.stat(_marker(cache_dir, repo_id, repo_type)).st_mtime
    except OSError:
        return None


def all_last_used(cache_dir: Path) -> dict[str, float]:
    """Folder name (``models--org--name``) -> last use, for every recorded repo."""
    found: dict[str, float] = {}
    try:
        with os.scandir(cache_dir / STORE) as entries:
            for entry in entries:
                try:
                    found[entry.name] = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
    except OSError:
        pass
    return found


def forget(cache_dir: Path, repo_id: str, repo_type: str = "model") -> None:
    try:
        _marker(cache_dir, repo_id, repo_type).unlink()
    except OSError:
        pass
