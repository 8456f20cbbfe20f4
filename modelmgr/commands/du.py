"""``modelmgr du``: disk usage per cached repo, the total, and the free space left."""
from __future__ import annotations

import os
from pathlib import Path

import click


def disk_space(path: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the disk holding ``path``, or of its nearest existing parent."""
    import shutil

    candidate = Path(os.path.abspath(path))
    for folder in (candidate, *candidate.parents):
        try:
            usage = shutil.disk_usage(folder)
        except OSError:
            continue
        return usage.free, usage.total
    return None


@click.command("du")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def du(pattern: str | None, as_json: bool) -> None:
    """Show how much disk each cached repo takes (blobs shared between revisions counted once),
    the total, and the free space on each cache directory's disk.

    PATTERN filters IDs as in `modelmgr list`.
    """
    from modelmgr.cache.scan import scan_cache, unique_size
    from modelmgr.units import format_size
    from modelmgr.commands._common import echo_json, get_config, render_table
    from modelmgr.commands._common import matches

    config = get_config()
    info = scan_cache(config.scan_dirs, reuse=True, parallel=True)
    for warning in info.warnings:
        click.echo(f"Warning: {warning}", err=True)
    repos = sorted((r for r in info.repos if matches(pattern, r)), key=lambda r: (-r.size_on_disk, r.display_id.lower()))
    total = info.size_on_disk if len(repos) == len(info.repos) else unique_size(repos)
    caches = []
    for cache_dir in info.cache_dirs:
        space = disk_space(cache_dir)
        caches.append({
            "path": str(cache_dir),
            "read_only": cache_dir != info.cache_dirs[0],
            "exists": cache_dir.is_dir(),
            "size_bytes": unique_size(r for r in info.repos if r.cache_dir == cache_dir),
            "free_bytes": space[0] if space else None,
            "disk_bytes": space[1] if space else None,
        })

    if as_json:
        echo_json({
            "repos": [
                {
                    "id": repo.display_id,
                    "repo_id": repo.repo_id,
                    "repo_type": repo.repo_type,
                    "size_bytes": repo.size_on_disk,
                    "revisions": len(repo.revisions),
                    "files": repo.nb_files,
                    "incomplete_bytes": sum(size for _, size in repo.incomplete_blobs),
                    "path": repo.folder,
                    "cache_dir": str(repo.cache_dir),
                    "read_only": repo.read_only,
                }
                for repo in repos
            ],
            "total_bytes": total,
            "cache_dirs": caches,
        })
        return

    if repos:
        several = len(info.cache_dirs) > 1
        headers = ["ID", "SIZE", "REVISIONS", "FILES"] + (["CACHE"] if several else [])
        rows = [
            [repo.display_id, format_size(repo.size_on_disk), str(len(repo.revisions)), str(repo.nb_files)]
            + ([f"{repo.cache_dir}{' (read-only)' if repo.read_only else ''}"] if several else [])
            for repo in repos
        ]
        click.echo(render_table(headers, rows, right=(1, 2, 3)))
        click.echo(f"\nTotal: {format_size(total)} in {len(repos)} repo{'s' if len(repos) != 1 else ''}")
    elif pattern and info.repos:
        click.echo(f"No cached model matches {pattern!r}.")
    else:
        click.echo("The cache is empty. Pull a model with `modelmgr pull org/name`.")
    partial = sum(size for repo in repos for _, size in repo.incomplete_blobs)
    if partial:
        click.echo(f"Partial downloads: {format_size(partial)} (not counted above; a later pull resumes them)")
    for cache in caches:
        role = "read-only" if cache["read_only"] else "writable"
        free = f"{format_size(cache['free_bytes'])} free of {format_size(cache['disk_bytes'])}" if cache["free_bytes"] is not None else "free space unknown"
        missing = "" if cache["exists"] else ", not created yet"
        click.echo(f"Cache {cache['path']} ({role}{missing}): {format_size(cache['size_bytes'])} used, {free} on its disk")
