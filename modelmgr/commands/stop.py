"""`modelmgr stop`: unload a model from the running server."""
from __future__ import annotations

import click

from modelmgr.commands._common import get_config


@click.command()
@click.argument("model")
def stop(model: str) -> None:
    """Unload MODEL from the server at MODELMGR_HOST: now if idle, else when its requests end."""
    from modelmgr.serve.client import Client
    from modelmgr.serve.settings import client_address, client_api_key

    config = get_config()
    status = Client(client_address(config), client_api_key(config), timeout=60).stop(model)
    click.echo(f"Unloaded {model}." if status == "unloaded" else f"{model} unloads when its running requests end.")
