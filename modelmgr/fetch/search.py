"""Search the Hub's models (``GET /api/models?search=``) through the configured endpoints,
proxies and fallback, as every other Hub request goes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

from modelmgr.fetch.hub import HubClient, _read_json
from modelmgr.fetch.transport import EndpointFailure
from modelmgr.project.config import Config, Endpoint

SORTS = {"downloads": "downloads", "likes": "likes", "recent": "lastModified"}
MAX_LIMIT = 1000


@dataclass(frozen=True)
class ModelHit:
    id: str
    downloads: int
    likes: int
    last_modified: str | None
    library: str | None
    pipeline_tag: str | None


def search_models(
    query: str,
    *,
    config: Config,
    sort: str = "downloads",
    library: str | None = None,
    pipeline_tag: str | None = None,
    limit: int = 20,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[list[ModelHit], Endpoint]:
    params: list[tuple[str, str]] = [("search", query), ("sort", SORTS[sort]), ("direction", "-1"),
                                     ("limit", str(min(limit, MAX_LIMIT)))]
    if library:
        params.append(("library", library))
    if pipeline_tag:
        params.append(("pipeline_tag", pipeline_tag))
    for field in ("downloads", "likes", "lastModified", "library_name", "pipeline_tag"):
        params.append(("expand[]", field))
    path = f"/api/models?{urlencode(params)}"
    client = HubClient(config, on_warning=on_warning)

    def attempt(endpoint: Endpoint) -> list[ModelHit]:
        response = client.transport.request(endpoint, "GET", path, headers={"Accept": "application/json"})
        if response.status == 429 or response.status >= 500:
            response.close()
            raise EndpointFailure(f"HTTP {response.status}")
        if response.status != 200:
            response.close()
            raise EndpointFailure(f"HTTP {response.status} to a search (a mirror without the search API?)")
        # As every other metadata answer is read: an HTML page, malformed or too deeply nested
        # JSON (a RecursionError in json.loads) moves on to the next endpoint at once.
        entries = _read_json(response, endpoint)
        if not isinstance(entries, list):
            raise EndpointFailure("answered a search with something that is not a list")
        return [hit for entry in entries[:limit] if (hit := _hit(entry)) is not None]

    return client.call(f"search models for {query!r}", attempt)


def _hit(entry: object) -> ModelHit | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return None
    ident = "".join(c for c in entry["id"] if c.isprintable())  # a server's text, shown on a terminal

    def number(key: str) -> int:
        value = entry.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    def text(key: str) -> str | None:
        value = entry.get(key)
        return "".join(c for c in value if c.isprintable())[:80] if isinstance(value, str) else None

    return ModelHit(ident, number("downloads"), number("likes"), text("lastModified"), text("library_name"), text("pipeline_tag"))
