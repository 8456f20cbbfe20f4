"""``verify --repair``: delete the corrupt blobs a verify found and pull the damaged files again,
each at the commit it belongs to."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from modelmgr.cache.removal import delete_path
from modelmgr.cache.verify import VerifyReport
from modelmgr.errors import ModelmgrError
from modelmgr.fetch.events import ignore
from modelmgr.fetch.pull import pull
from modelmgr.project.names import is_etag
from modelmgr.project.refs import ModelRef


@dataclass(frozen=True)
class Repair:
    """One repair: blobs deleted, then files pulled again at one commit."""

    display_id: str
    commit: str | None
    paths: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        what = f"{len(self.paths)} file(s) @ {self.commit[:8]}" if self.commit else "nothing to fetch"
        deleted = f", deleted {len(self.deleted)} corrupt blob(s)" if self.deleted else ""
        if self.error:
            return f"{self.display_id}: could not repair {what}{deleted}: {self.error}"
        return f"{self.display_id}: repaired {what}{deleted}"

    def to_dict(self) -> dict:
        return {"id": self.display_id, "revision": self.commit, "paths": list(self.paths),
                "deleted": list(self.deleted), "ok": self.ok, "error": self.error}


def repair(report: VerifyReport, config, *, on_event=None) -> tuple[Repair, ...]:
    """Delete the corrupt blobs of the writable cache and pull the damaged files again."""
    done: list[Repair] = []
    for check in report.checks:
        repo = check.repo
        if check.ok or not (check.corrupt or check.missing):
            continue
        if repo.read_only:
            done.append(Repair(repo.display_id, None, (), error=(
                f"it is in the read-only cache {repo.cache_dir}; ask its owner to repair it there "
                f"(HF_HUB_CACHE={repo.cache_dir} modelmgr verify --repair)")))
            continue
        blobs_dir = os.path.realpath(os.path.join(repo.path, "blobs"))
        deleted = []
        for blob in check.corrupt:
            if os.path.realpath(os.path.dirname(blob.path)) == blobs_dir and is_etag(os.path.basename(blob.path)):
                if delete_path(Path(blob.path), within=blobs_dir):
                    deleted.append(blob.path)
        wanted = check.damaged_files
        if not wanted:
            done.append(Repair(repo.display_id, None, (), tuple(deleted)))
            continue
        for position, (commit, files) in enumerate(sorted(wanted.items())):
            paths = tuple(sorted(files))
            try:
                pull(ModelRef(repo_id=repo.repo_id, revision=commit), config=config,
                     include=[glob.escape(path) for path in paths], repo_type=repo.repo_type,
                     on_event=on_event or ignore)
            except ModelmgrError as exc:
                done.append(Repair(repo.display_id, commit, paths, tuple(deleted) if position == 0 else (), str(exc)))
                continue
            done.append(Repair(repo.display_id, commit, paths, tuple(deleted) if position == 0 else ()))
    return tuple(done)
