"""``lock`` and ``sync``: resolve the project's ``[models.*]`` to commits and record what a pull
would fetch; make a cache hold exactly that and re-hash it, so every machine of a team (and CI)
runs byte-identical models."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from modelmgr import errors
from modelmgr.cache.hashing import hash_file
from modelmgr.cache.layout import RepoPaths
from modelmgr.project.config import PROJECT_FILE, Config
from modelmgr.project.lockfile import Lock, LockedFile, LockedModel
from modelmgr.project.refs import ModelRef, is_commit


def build_lock(config: Config) -> list[LockedModel]:
    """Resolve every alias of the config to a commit and the files a pull would take."""
    from modelmgr.fetch.hub import HubClient
    from modelmgr.fetch.pull import plan_pull

    if not config.models:
        raise errors.ConfigError(f"no models to lock: add [models.NAME] tables with an id to {PROJECT_FILE}.")
    client = HubClient(config)
    locked = []
    for name, alias in sorted(config.models.items()):
        revision = alias.revision or "main"
        plan = plan_pull(client, ModelRef(repo_id=alias.id, revision=revision), config)
        locked.append(LockedModel(name, alias.id, revision, plan.commit,
                                  tuple(LockedFile(f.path, f.size, f.etag) for f in plan.files)))
    return locked


@dataclass(frozen=True)
class SyncedModel:
    name: str
    id: str
    commit: str
    files: int
    downloaded: int
    path: Path


def sync(lock: Lock, config: Config) -> list[SyncedModel]:
    """Bring the cache to exactly the lock (pulling at the locked commits), then re-hash it."""
    from modelmgr.fetch.pull import find_cached, pull

    results = []
    for model in lock.models:
        ref = ModelRef(repo_id=model.id, revision=model.commit)
        wanted = [glob.escape(f.path) for f in model.files]
        downloaded = 0
        if config.offline:
            snapshot = find_cached(ref, config)
            if snapshot is None:
                raise errors.OfflineError(f"{model.name} ({model.id}@{model.commit[:8]}) is not in the cache and offline mode is on: run `modelmgr sync` online.")
        else:
            result = pull(ref, config=config, include=wanted)
            snapshot, downloaded = result.snapshot, result.downloaded
        verify_locked(model, snapshot.path)
        _write_ref(config, model)
        results.append(SyncedModel(model.name, model.id, model.commit, len(model.files), downloaded, snapshot.path))
    return results


def verify_locked(model: LockedModel, snapshot: Path) -> None:
    problems = []
    for file in model.files:
        target = snapshot / file.path
        if not target.exists():
            problems.append(f"{file.path} is missing")
        elif target.stat().st_size != file.size:
            problems.append(f"{file.path} has {target.stat().st_size} bytes, the lock says {file.size}")
        elif hash_file(target, file.hash, file.size) != file.hash:
            problems.append(f"{file.path} does not match its {file.algorithm}")
    if problems:
        raise errors.IntegrityError(
            f"{model.name} ({model.id}@{model.commit[:8]}) does not match the lock: {'; '.join(problems)}. "
            "Run `modelmgr verify --repair` or `modelmgr sync` online.")


def _write_ref(config: Config, model: LockedModel) -> None:
    """Give a fresh cache the locked branch, so plain ``from_pretrained(id)`` finds the snapshot
    offline. An existing ref is left alone: the cache may be shared with other projects."""
    paths = RepoPaths(config.cache_dir, model.id)
    if not is_commit(model.revision) and paths.snapshot(model.commit).is_dir() and paths.read_ref(model.revision) is None:
        paths.write_ref(model.revision, model.commit)
