"""`modelmgr serve`: the cache and the backends behind an OpenAI-compatible HTTP server."""
from __future__ import annotations

import click

from modelmgr.commands._common import get_config
from modelmgr.serve.settings import DEFAULT_PORT, KEY_VARIABLE


@click.command()
@click.option("--host", default=None, metavar="HOST[:PORT]", help="Address to listen on (default: MODELMGR_HOST, config serve.host, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help=f"Port (default: MODELMGR_HOST, config serve.port, else {DEFAULT_PORT}).")
@click.option("--api-key", default=None, metavar="KEY", help=f"Require Authorization: Bearer KEY on every request ({KEY_VARIABLE}, config serve.api_key). Needed off loopback.")
@click.option("--keep-alive", default=None, metavar="DURATION", help="Keep a model loaded this long after its last request: 30s, 5m, 1h, 0, -1 forever (default 5m).")
@click.option("--max-loaded", type=click.IntRange(min=1), default=None, metavar="N", help="Most models loaded at once (default: as many as fit).")
@click.option("--max-memory", default=None, metavar="SIZE", help="Memory budget for all loaded models together, e.g. 16G (default: what is free).")
@click.option("--parallel", type=click.IntRange(min=1), default=None, metavar="N", help="Requests run at once per model, batched where the backend can (default 8).")
@click.option("--trust-remote-code", is_flag=True, help="Let requests load models that ship their own Python code (pinned commits only).")
@click.option("--allow-pickle", is_flag=True, help="Let requests load models with pickle (.bin) weights, which can run code.")
def serve(host, port, api_key, keep_alive, max_loaded, max_memory, parallel, trust_remote_code, allow_pickle):
    """Serve cached models over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models).

    \b
    A model loads on its first request and stays loaded for the keep-alive; when a new one
    does not fit the budget the least recently used idle one is unloaded. Clients: any OpenAI
    client with base_url http://127.0.0.1:11435/v1; `modelmgr run`, `ps` and `stop` use the
    server at MODELMGR_HOST when one is up.
    \b
    Examples:
      modelmgr serve
      MODELMGR_API_KEY=secret modelmgr serve --host 0.0.0.0 --max-memory 20G
    """
    from modelmgr.serve.server import bind, run_server
    from modelmgr.serve.settings import check_exposure, resolve_settings
    from modelmgr.units import parse_size

    config = get_config()
    settings = resolve_settings(
        config, host=host, port=port, api_key=api_key, keep_alive=keep_alive, max_loaded=max_loaded, parallel=parallel,
        max_memory=parse_size(max_memory) if max_memory else None, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
    )
    check_exposure(settings)  # before binding or importing anything of the server
    sock = bind(settings)
    run_server(config, settings, sock, announce=lambda line: click.echo(line, err=True))
