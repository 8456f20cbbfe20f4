"""`run` through a running server: found at MODELMGR_HOST (or the config's serve address) with
one short probe, so the second `modelmgr run` starts at once, as with `ollama run`."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config
    from modelmgr.serve.client import RemoteBackend


def server_backend(config: "Config", ref: str) -> "RemoteBackend | None":
    """A backend that generates on the running server, or None to run in this process: no
    server answers, or REF is a local folder (a server serves only its cache)."""
    from modelmgr.errors import InvalidReference
    from modelmgr.project.refs import parse_ref
    from modelmgr.serve.client import Client, RemoteBackend
    from modelmgr.serve.settings import client_address, client_api_key

    try:
        if parse_ref(ref, aliases=config.aliases()).is_local:
            return None
    except InvalidReference:
        return None  # the in-process path says what is wrong with it
    client = Client(client_address(config), client_api_key(config))
    return RemoteBackend(client, ref) if client.is_up() else None
