"""`GET /api/models?search=...` as huggingface.co answers it, over the LocalHub's repos."""
from __future__ import annotations

from typing import Any

_FIXED_DATE = "2025-01-01T00:00:00.000Z"
_SORTS = {"downloads": "downloads", "likes": "likes", "lastModified": "lastModified", "trending_score": "downloads"}


def search_models(repos: list[Any], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    text = query.get("search", [""])[0].lower()
    filters = [f for value in query.get("filter", []) for f in value.split(",") if f]
    library = query.get("library", [None])[0]
    pipeline = query.get("pipeline_tag", [None])[0]
    found = []
    for repo in repos:
        card = repo.card
        tags = {t for t in (card.get("library_name"), card.get("pipeline_tag")) if t}
        if text and text not in repo.repo_id.lower():
            continue
        if library and card.get("library_name") != library:
            continue
        if pipeline and card.get("pipeline_tag") != pipeline:
            continue
        if any(f not in tags for f in filters):
            continue
        found.append({
            "_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id,
            "downloads": card.get("downloads", 0), "likes": card.get("likes", 0),
            "lastModified": card.get("lastModified", _FIXED_DATE), "private": False,
            "library_name": card.get("library_name"), "pipeline_tag": card.get("pipeline_tag"),
            "tags": sorted(tags),
        })
    sort = _SORTS.get(query.get("sort", [""])[0])
    if sort:
        descending = query.get("direction", ["-1"])[0] != "1"
        found.sort(key=lambda m: (m[sort], m["id"]), reverse=descending)
    limit = query.get("limit", [""])[0]
    if limit.isdigit():
        found = found[: int(limit)]
    return found
