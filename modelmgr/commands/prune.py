"""``modelmgr prune``: evict from the writable cache by policy, after showing what goes and why."""
from __future__ import annotations

import click

from modelmgr.commands._common import quiet_option

POLICY_FLAGS = "--max-size SIZE, --older-than DURATION, --detached, --incomplete, --orphans"


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from modelmgr.errors import ConfigError
    from modelmgr.units import parse_size

    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from modelmgr.errors import ConfigError
    from modelmgr.units import parse_duration

    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("prune")
@click.option("--max-size", callback=_size, metavar="SIZE", help="Evict least recently used models until the cache fits (50G, 1.5GB, 500MiB).")
@click.option("--older-than", callback=_duration, metavar="DURATION", help="Evict models not used for this long (30d, 12h, 2w).")
@click.option("--detached", is_flag=True, help="Remove revisions no branch or tag points to.")
@click.option("--incomplete", is_flag=True, help="Remove partial downloads (blobs/*.incomplete and their resume state).")
@click.option("--orphans", is_flag=True, help="Remove blobs no snapshot points to.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and the result) as JSON.")
@quiet_option
def prune(max_size, older_than, detached, incomplete, orphans, yes, dry_run, as_json) -> None:
    """Free space in the writable cache by policy; policies combine.

    "Used" is when `modelmgr run` or `load` last ran a model, else its file times. Models
    pinned in the config ([models.*]) or in the project's modelmgr.lock are never evicted by
    --max-size, --older-than or --detached. Read-only cache directories are never touched.

    \b
    Examples:
      modelmgr prune --max-size 50G --dry-run
      modelmgr prune --older-than 30d --detached -y
      modelmgr prune --incomplete --orphans
    """
    from modelmgr.cache.prune import collect
    from modelmgr.units import format_size
    from modelmgr.commands._common import confirm, echo_json, get_config

    if max_size is None and older_than is None and not (detached or incomplete or orphans):
        raise click.UsageError(f"say what to prune: {POLICY_FLAGS} (they combine).")
    if as_json and not (yes or dry_run):
        raise click.UsageError("--json cannot ask for confirmation: add -y to delete, or --dry-run to only see the plan.")

    config = get_config()
    plan, info = collect(config, max_size=max_size, older_than=older_than, detached=detached,
                         incomplete=incomplete, orphans=orphans)
    for warning in info.warnings:
        click.echo(f"Warning: {warning}", err=True)

    if as_json:
        document = {"dry_run": dry_run, **plan.to_dict()}
        if not dry_run and not plan.empty:
            document["freed_bytes"] = plan.execute(on_skip=lambda line: click.echo(f"Note: {line}", err=True))
            document["done"] = True
        echo_json(document)
        return

    if plan.empty:
        for line in plan.describe():
            click.echo(line)
        click.echo(f"Nothing to prune ({', '.join(plan.policies)}).")
        return
    for line in plan.describe():
        click.echo(line)
    revisions = sum(len(e.plan.revisions) for e in plan.evictions)
    parts = []
    if plan.evictions:
        parts.append(f"{revisions} revision{'s' if revisions != 1 else ''} in {len(plan.evictions)} repo{'s' if len(plan.evictions) != 1 else ''}")
    if plan.leftovers:
        parts.append(f"{len(plan.leftovers)} leftover file{'s' if len(plan.leftovers) != 1 else ''}")
    summary = f"{' and '.join(parts)}, {plan.freed_str}"
    if dry_run:
        click.echo(f"Dry run: would delete {summary}. Nothing was deleted.")
        return
    confirm(f"Delete {summary}?", yes=yes)
    freed = plan.execute(on_skip=lambda line: click.echo(f"Note: {line}", err=True))
    click.echo(f"Pruned {summary.rsplit(', ', 1)[0]}: freed {format_size(freed)}.")
