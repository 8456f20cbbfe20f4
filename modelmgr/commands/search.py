"""`modelmgr search QUERY`: find models on the Hub (or the configured mirrors)."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config, render_table


@click.command()
@click.argument("query")
@click.option("--sort", type=click.Choice(["downloads", "likes", "recent"]), default="downloads", show_default=True,
              help="Order of the results.")
@click.option("--library", metavar="NAME", help="Only models for this library (transformers, gguf, ...).")
@click.option("--task", "pipeline_tag", metavar="TAG", help="Only models with this pipeline tag (text-generation, ...).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="At most this many results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="Hub endpoint or mirror (repeatable).")
def search(query, sort, library, pipeline_tag, limit, as_json, endpoints):
    """Search the Hub's models by name.

    \b
    Examples:
      modelmgr search qwen2.5 --task text-generation
      modelmgr search llama --library gguf --sort likes --limit 5
    """
    from modelmgr.fetch.search import search_models
    from modelmgr.units import format_count

    config = get_config(endpoints=endpoints)
    hits, endpoint = search_models(query, config=config, sort=sort, library=library, pipeline_tag=pipeline_tag, limit=limit,
                                  on_warning=lambda message: click.echo(f"note: {message}", err=True))
    if as_json:
        echo_json([{"id": h.id, "downloads": h.downloads, "likes": h.likes, "last_modified": h.last_modified,
                    "library": h.library, "pipeline_tag": h.pipeline_tag} for h in hits])
        return
    if not hits:
        click.echo(f"No models match {query!r} on {endpoint.name}.")
        return
    rows = [(h.id, format_count(h.downloads), format_count(h.likes), (h.last_modified or "-")[:10]) for h in hits]
    click.echo(render_table(("ID", "DOWNLOADS", "LIKES", "MODIFIED"), rows, right=(1, 2)))
