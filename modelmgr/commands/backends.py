"""`modelmgr backends`: which backends are installed, where from, and whether each works here."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, render_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per backend.")
def backends(as_json: bool) -> None:
    """List backends: their plugin, whether they are available here and why not.

    Plugins that failed to load are listed with their error; they never stop the others.
    MODELMGR_LOAD_PLUGINS=name,... loads only the named plugins.
    """
    from modelmgr.run.registry import backend_statuses, get_registry
    from modelmgr.run.plugins import broken_plugins
    from modelmgr.units import format_size

    registry = get_registry()
    statuses = backend_statuses(registry)
    broken = broken_plugins()
    if as_json:
        echo_json([status.to_dict() for status in statuses])
        for info in broken:  # not part of the list: its objects are backends, and these are not
            click.echo(f"Warning: plugin {info.name!r} ({info.source}) failed to load: {info.error}", err=True)
        for problem in registry.problems:
            click.echo(f"Warning: {problem}", err=True)
        return

    if statuses:
        rows = [
            (
                s.name,
                s.source,
                "yes" if s.available else "no",
                f"{format_size(s.free)} free on {s.device}" if s.available and s.free is not None else (s.device or "-"),
                (s.reason or s.description) if not s.available else s.description,
            )
            for s in statuses
        ]
        click.echo(render_table(["NAME", "SOURCE", "AVAILABLE", "MEMORY", "NOTES"], rows))
    else:
        click.echo("No backends: no backend plugin is installed or allowed (check MODELMGR_LOAD_PLUGINS). Install modelmgr[run].")
    if broken:
        click.echo("\nPlugins that failed to load:")
        for info in broken:
            click.echo(f"  {info.name} ({info.source}): {info.error}")
    for problem in registry.problems:
        click.echo(f"Warning: {problem}", err=True)
