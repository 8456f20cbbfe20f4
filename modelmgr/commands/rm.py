"""``modelmgr rm``: remove cached models or single revisions, after showing what goes."""
from __future__ import annotations

import click

from modelmgr.commands._common import quiet_option, split_repo_type


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF[@REVISION]...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and the result) as JSON.")
@quiet_option
def rm(refs: tuple[str, ...], yes: bool, dry_run: bool, as_json: bool) -> None:
    """Remove cached models, or single revisions of them.

    REF is an ID (`org/name`), an alias, or `dataset:org/name`; `@REVISION` picks one revision
    by branch, tag, full commit or a commit prefix of at least 7 hex digits. Without it the whole
    repo goes. Blobs that a remaining revision still uses are kept.

    \b
    Examples:
      modelmgr rm Qwen/Qwen2.5-0.5B-Instruct
      modelmgr rm Qwen/Qwen2.5-0.5B-Instruct@a1b2c3d4 --dry-run
    """
    from modelmgr.errors import InvalidReference
    from modelmgr.project.refs import parse_ref
    from modelmgr.cache.removal import plan_removals
    from modelmgr.units import format_size
    from modelmgr.commands._common import confirm, echo_json, get_config

    if as_json and not (yes or dry_run):
        raise click.UsageError("--json cannot ask for confirmation: add -y to delete, or --dry-run to only see the plan.")

    config = get_config()
    requests = []
    for text in refs:
        repo_type, rest = split_repo_type(text)
        ref = parse_ref(rest, aliases=config.aliases())
        if ref.is_local:
            raise InvalidReference(f"{text!r} is a local directory; `modelmgr rm` removes models from the cache. Delete the directory yourself.")
        requests.append((ref.repo_id, ref.revision, repo_type))

    from modelmgr.cache.scan import scan_cache

    info = scan_cache(config.scan_dirs)
    plans = plan_removals(info, requests)
    touched = tuple(plan.repo.path for plan in plans)
    for warning in info.warnings:
        if any(warning.about(path) for path in touched):
            click.echo(f"Warning: {warning}", err=True)

    total = sum(plan.freed_bytes for plan in plans)
    if as_json:
        document = {"dry_run": dry_run, "freed_bytes": total, "removals": [plan.to_dict() for plan in plans]}
        if not dry_run:
            document["freed_bytes"] = sum(plan.execute() for plan in plans)
            document["done"] = True
        echo_json(document)
        return

    for plan in plans:
        for line in plan.describe():
            click.echo(line)
    revisions = sum(len(plan.revisions) for plan in plans)
    summary = f"{revisions} revision{'s' if revisions != 1 else ''} in {len(plans)} repo{'s' if len(plans) != 1 else ''}, {format_size(total)}"
    if dry_run:
        click.echo(f"Dry run: would delete {summary}. Nothing was deleted.")
        return
    confirm(f"Delete {summary}?", yes=yes)
    freed = sum(plan.execute() for plan in plans)
    click.echo(f"Deleted {revisions} revision{'s' if revisions != 1 else ''}, freed {format_size(freed)}.")
