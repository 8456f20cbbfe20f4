"""What a snapshot is meant to contain, written before the first byte is fetched.

``{repo}/.modelmgr/manifests/{commit}.json`` lists the files a pull intends the snapshot to
have. With it, ``list`` can tell a complete snapshot from one whose pull was interrupted, and
``verify`` knows every expected hash. Snapshots written by other tools simply have none.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from modelmgr.fsutil import write_atomic
from modelmgr.cache.layout import RepoPaths


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    etag: str


def manifest_path(paths: RepoPaths, commit: str) -> Path:
    return paths.manifest(commit)


def read_manifest(paths: RepoPaths, commit: str) -> dict[str, ManifestEntry] | None:
    try:
        data = json.loads(manifest_path(paths, commit).read_text())
        return {f["path"]: ManifestEntry(f["path"], int(f["size"]), f["etag"]) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(paths: RepoPaths, repo_id: str, commit: str, entries: list[ManifestEntry]) -> None:
    """Merge with what an earlier pull of the same commit intended: a file asked for once and
    still missing keeps the snapshot marked incomplete."""
    merged = read_manifest(paths, commit) or {}
    merged.update({entry.path: entry for entry in entries})
    target = manifest_path(paths, commit)
    payload = {
        "repo_id": repo_id,
        "commit": commit,
        "files": [{"path": e.path, "size": e.size, "etag": e.etag} for e in sorted(merged.values(), key=lambda e: e.path)],
    }
    write_atomic(target, json.dumps(payload, indent=1))


def missing_files(paths: RepoPaths, commit: str) -> list[str]:
    """Files the manifest expects that the snapshot lacks ([] when complete or unknown)."""
    manifest = read_manifest(paths, commit)
    if manifest is None:
        return []
    snapshot = paths.snapshot(commit)
    return sorted(path for path in manifest if not os.path.exists(snapshot / path))
