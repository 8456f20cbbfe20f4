"""``modelmgr verify``: re-hash cached blobs, report what is corrupt, missing or unexpected; repair."""
from __future__ import annotations

import click


def _ordered_dirs(config) -> list:
    """The writable cache first, so the scan marks exactly the others read-only."""
    return [config.cache_dir, *(d for d in config.cache_dirs if d != config.cache_dir)]


@click.command("verify")
@click.argument("ref", required=False, metavar="[REF[@REVISION]]")
@click.option("--repair", is_flag=True, help="Delete corrupt blobs and fetch bad or missing files again.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (and the repairs) as JSON.")
def verify(ref: str | None, repair: bool, as_json: bool) -> None:
    """Re-hash every cached blob (or one model's) against its name: sha256 for LFS files, the git
    blob sha1 for the others. Reports corrupt blobs, missing files (broken links, files a pull
    meant to fetch) and unexpected files; exits 1 if anything is wrong.

    REF is an ID, an alias or `dataset:org/name`; `@REVISION` checks one revision's files only.

    \b
    Examples:
      modelmgr verify
      modelmgr verify Qwen/Qwen2.5-0.5B-Instruct --repair
    """
    from modelmgr.cache.scan import scan_cache
    from modelmgr.errors import IntegrityError, InvalidReference, NotCached
    from modelmgr.units import format_size
    from modelmgr.fetch.repair import repair as repair_cache
    from modelmgr.cache.verify import verify_cache
    from modelmgr.commands._common import echo_json, get_config
    from modelmgr.commands._common import split_repo_type

    config = get_config()
    select = None
    wanted = None
    if ref is not None:
        from modelmgr.project.refs import parse_ref
        from modelmgr.cache.removal import resolve_revision

        repo_type, rest = split_repo_type(ref)
        parsed = parse_ref(rest, aliases=config.aliases())
        if parsed.is_local:
            raise InvalidReference(f"{ref!r} is a local directory; `modelmgr verify` checks the cache.")
        wanted = (parsed.repo_id.lower(), repo_type, parsed.revision)

        def select(repo):
            if (repo.repo_id.lower(), repo.repo_type) != wanted[:2]:
                return False
            return (resolve_revision(repo, wanted[2]),) if wanted[2] else True

    dirs = _ordered_dirs(config)
    info = scan_cache(dirs)
    if wanted is not None and not any((r.repo_id.lower(), r.repo_type) == wanted[:2] for r in info.repos):
        raise NotCached(f"{ref} is not in the cache ({', '.join(map(str, dirs))}). Run `modelmgr list` to see what is cached.")
    for warning in info.warnings:
        click.echo(f"Warning: {warning}", err=True)

    def progress(position: int, count: int, repo) -> None:
        click.echo(f"Verifying [{position}/{count}] {repo.display_id} ({format_size(repo.size_on_disk)})...", err=True)

    report = verify_cache(info, select=select, on_repo=progress)
    document: dict = {"before": report.to_dict()} if as_json else {}
    if not as_json:
        for line in report.describe():
            click.echo(line)

    final = report
    if repair and not report.ok:
        from modelmgr.fetch.events import Notice

        def on_event(event) -> None:
            if isinstance(event, Notice) and not as_json:
                click.echo(f"note: {event.message}", err=True)

        repairs = repair_cache(report, config, on_event=on_event)
        touched = {(c.repo.repo_id, c.repo.repo_type) for c in report.checks if not c.ok}
        after_info = scan_cache(dirs)

        def again(repo):
            if (repo.repo_id, repo.repo_type) not in touched:
                return False
            return select(repo) if select is not None else True

        final = verify_cache(after_info, select=again)
        if as_json:
            document["repairs"] = [r.to_dict() for r in repairs]
            document["after"] = final.to_dict()
        else:
            click.echo("")
            for item in repairs:
                click.echo(item.line())
            click.echo("After repair:")
            for line in final.describe():
                click.echo(line)
    if as_json:
        document["ok"] = final.ok
        echo_json(document)
    if not final.ok:
        hint = "" if repair else " Run `modelmgr verify --repair` to fetch the bad files again."
        raise IntegrityError(f"verify found problems: {final.summary()}.{hint}")
