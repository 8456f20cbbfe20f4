"""`modelmgr config show|path`: the effective settings, and where each one came from."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config


@click.group()
def config():
    """Show the effective configuration and the files consulted."""


def _effective(cfg) -> dict[str, object]:
    return {
        "cache.dir": str(cfg.cache_dir),
        "cache.dirs": [str(d) for d in cfg.cache_dirs[1:]],
        "cache.max_size": cfg.max_cache_size,
        "hub.endpoints": [
            {"url": e.url, "name": e.name, "timeout": e.timeout, "send_token": e.send_token} for e in cfg.endpoints
        ],
        "hub.offline": cfg.offline,
        "hub.connections": cfg.connections,
        "hub.timeout": cfg.endpoints[0].timeout if cfg.endpoints else None,
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
    if key == "hub.token":
        return "environment or stored token" if cfg.token else "-"
    return cfg.sources.get(key, "default")


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
            shown = ", ".join(f"{e['name']}{' (token)' if e['send_token'] else ''}" for e in value)
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
