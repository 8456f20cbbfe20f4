"""What GET /v1/models lists: every model in the server's caches, and the config's aliases under
their own names (a team serves `chat` and clients ask for `chat`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelmgr.serve.protocol import model_object

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config


def list_models(config: "Config") -> list[dict[str, Any]]:
    from modelmgr.cache.scan import scan_cache

    info = scan_cache(config.scan_dirs, reuse=True)
    entries: dict[str, dict[str, Any]] = {}
    for repo in info.repos:
        if repo.repo_type != "model" or not any(not revision.incomplete for revision in repo.revisions):
            continue
        entries.setdefault(repo.repo_id, model_object(repo.repo_id, created=int(repo.last_modified), owned_by=repo.repo_id.split("/")[0]))
    for name, alias in config.models.items():
        cached = entries.get(alias.id)
        entry = model_object(name, created=cached["created"] if cached else 0, owned_by="modelmgr")
        entry["modelmgr"] = {"alias_for": alias.id + (f"@{alias.revision}" if alias.revision else ""), "cached": cached is not None}
        entries.setdefault(name, entry)
    return list(entries.values())
