"""`modelmgr ps`: the models a running server has loaded."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config, render_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the server's list as JSON.")
def ps(as_json: bool) -> None:
    """List the models loaded in the server at MODELMGR_HOST (default 127.0.0.1:11435)."""
    from modelmgr.serve.client import Client
    from modelmgr.serve.settings import client_address, client_api_key
    from modelmgr.units import format_size

    config = get_config()
    models = Client(client_address(config), client_api_key(config), timeout=10).ps()
    if as_json:
        echo_json(models)
        return
    if not models:
        click.echo("No models loaded.")
        return

    def until(entry) -> str:
        if entry["running"] or entry["waiting"]:
            return f"busy ({entry['running']} running, {entry['waiting']} waiting)"
        if entry["expires_in"] is None:
            return "forever"
        return f"in {entry['expires_in']:.0f} s"

    rows = [(m["name"], m["backend"], m["device"], m["dtype"], format_size(m["size"]), until(m)) for m in models]
    click.echo(render_table(["NAME", "BACKEND", "DEVICE", "DTYPE", "SIZE", "UNLOADS"], rows, right=[4]))
