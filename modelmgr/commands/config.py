"""`modelmgr config show|path`: the effective settings, and where each one came from."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config


@click.group()
def config():
    """Show the effective configuration and the files consulted."""


def _network(cfg) -> dict[str, object]:
    """Proxies and trust as the fetch layer will use them; passwords redacted."""
    from modelmgr.fetch.proxy import ProxySettings
    from modelmgr.fetch.trust import trust_source

    proxies = ProxySettings(configured=cfg.proxy, no_proxy=cfg.no_proxy).describe()
    source, location = trust_source(cfg.ca_bundle)
    return {
        "hub.proxy": {k: v for k, v in proxies.items() if k != "no_proxy"},
        "hub.no_proxy": proxies["no_proxy"],
        "hub.ca_bundle": f"{location} (from {source})" if location else source,
    }


def _effective(cfg) -> dict[str, object]:
    return {
        "cache.dir": str(cfg.cache_dir),
        "cache.dirs": [str(d) for d in cfg.cache_dirs[1:]],
        "cache.max_size": cfg.max_cache_size,
        "hub.endpoints": [
            {"url": e.url, "name": e.name, "timeout": e.timeout, "send_token": e.send_token,
             "basic_auth": "set (hidden)" if e.basic_auth else None, "from": e.source} for e in cfg.endpoints
        ],
        "hub.offline": cfg.offline,
        "hub.connections": cfg.connections,
        "hub.timeout": cfg.endpoints[0].timeout if cfg.endpoints else None,
        "hub.metadata_timeout": cfg.metadata_timeout,
        "hub.download_timeout": cfg.download_timeout,
        **_network(cfg),
        "ui.progress": cfg.progress,
        "hub.token": "set (hidden)" if cfg.token else "not set",
        "run.backend": cfg.backend,
        "run.dtype": cfg.dtype,
        "run.max_memory": cfg.max_memory,
        "plugins.disabled": list(cfg.disabled_plugins),
        **{f"models.{name}": {k: v for k, v in vars(alias).items() if k != "name" and v is not None}
           for name, alias in cfg.models.items()},
    }


def _source(cfg, key: str) -> str:
    if key == "hub.endpoints":
        sources = {cfg.sources.get(k, "default") for k in ("hub.endpoints", "hub.endpoint")} - {"default"}
        return ", ".join(sorted(sources)) or "default"
    if key in ("hub.proxy", "hub.ca_bundle"):
        return cfg.sources.get(key) if cfg.sources.get(key, "default") != "default" else "environment or default"
    if key == "hub.token":
        return "environment or stored token" if cfg.token else "-"
    return cfg.sources.get(key, "default")


def _endpoint_text(endpoint: dict) -> str:
    text = endpoint["name"]
    if endpoint["send_token"]:
        text += " (token)"
    if endpoint["basic_auth"]:
        text += " (password)"
    if "settings from" in (endpoint["from"] or ""):  # one URL from two layers: say which settings won
        text += f" <{endpoint['from']}>"
    return text


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print settings and their sources as JSON.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="As on pull: see where it lands.")
@click.option("--offline", is_flag=True, default=None, help="As on pull.")
@click.option("--connections", type=int, default=None, help="As on pull.")
@click.option("--backend", default=None, help="As on run.")
@click.option("--dtype", default=None, help="As on run.")
@click.option("--max-memory", default=None, help="As on run.")
def show(as_json, endpoints, offline, connections, backend, dtype, max_memory):
    """Print every effective setting and the layer it came from.

    Layers, lowest first: default < system file < user file (or MODELMGR_CONFIG) <
    project modelmgr.toml < environment < command line.
    """
    cfg = get_config(flags={"hub.offline": offline, "hub.connections": connections, "run.backend": backend,
                            "run.dtype": dtype, "run.max_memory": max_memory}, endpoints=endpoints)
    values = _effective(cfg)
    if as_json:
        echo_json({key: {"value": value, "source": _source(cfg, key)} for key, value in values.items()})
        return
    width = max(map(len, values))
    for key, value in values.items():
        if key == "hub.endpoints":
            # Each endpoint once, with where it and its settings came from (HF_ENDPOINT + a config table).
            shown = ", ".join(_endpoint_text(e) for e in value)
        elif isinstance(value, list):
            shown = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            shown = "-" if value is None else str(value)
        click.echo(f"{key:<{width}}  {shown}  [{_source(cfg, key)}]")


@config.command("path")
def path():
    """List the config files consulted, lowest precedence first, and whether each exists."""
    from modelmgr.project.config import config_files

    files = config_files()
    for layer, file in files:
        click.echo(f"{layer:<8} {file}  ({'exists' if file.is_file() else 'absent'})")
    if not any(layer == "project" for layer, _ in files):
        click.echo("project  (no modelmgr.toml in this folder or its parents)")
