"""``modelmgr list``: one row per cached revision, from every cache directory."""
from __future__ import annotations

from datetime import datetime, timezone  # click imports it anyway: no cost at start

import click

from modelmgr.commands._common import matches

SORT_KEYS = ("name", "size", "modified", "used")


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _kinds_summary(repos) -> str:
    counts: dict[str, int] = {}
    for repo in repos:
        counts[repo.repo_type] = counts.get(repo.repo_type, 0) + 1
    parts = []
    for kind in ("model", "dataset", "space"):
        count = counts.get(kind, 0)
        if count or kind == "model":
            parts.append(f"{count} {kind}{'' if count == 1 else 's'}")
    return ", ".join(parts)


def weights_of(revision) -> tuple[str | None, list[str]]:
    """The revision's weight format and, for GGUF, the quantizations it holds, from the scan."""
    if revision.weight_format != "gguf":
        return revision.weight_format, []
    from modelmgr.fetch.quants import gguf_groups

    return "gguf", sorted(gguf_groups(dict.fromkeys(revision.gguf_files, 0)))


@click.command("list")
@click.argument("pattern", required=False)
@click.option("--sort", "sort_key", type=click.Choice(SORT_KEYS), default="name", show_default=True, help="Order of the rows.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per revision.")
def list_command(pattern: str | None, sort_key: str, as_json: bool) -> None:
    """List cached models, one row per revision, from every cache directory.

    PATTERN filters IDs with shell wildcards (case-insensitive); without a wildcard it matches
    any part of the ID: `modelmgr list qwen`, `modelmgr list 'Qwen/*Instruct'`.

    Repos unchanged since the last listing are read from a scan index in
    $XDG_CACHE_HOME/modelmgr; set MODELMGR_SCAN_INDEX=0 to read everything afresh.
    """
    from modelmgr.cache.scan import scan_cache, unique_size
    from modelmgr.units import format_age, format_size
    from modelmgr.commands._common import echo_json, get_config, render_table

    from modelmgr.cache.recency import all_last_used

    config = get_config()
    info = scan_cache(config.scan_dirs, reuse=True, parallel=True)
    for warning in info.warnings:
        click.echo(f"Warning: {warning}", err=True)
    # When `run`/`load` last used each model, recorded in any of the caches.
    used: dict[str, float] = {}
    for cache_dir in info.cache_dirs:
        for name, stamp in all_last_used(cache_dir).items():
            used[name] = max(stamp, used.get(name, 0.0))

    repos = [repo for repo in info.repos if matches(pattern, repo)]
    rows = [(repo, revision) for repo in repos for revision in repo.revisions]
    if sort_key == "size":
        rows.sort(key=lambda row: (-row[1].size_on_disk, row[0].display_id.lower()))
    elif sort_key == "modified":
        rows.sort(key=lambda row: -row[1].last_modified)
    elif sort_key == "used":
        rows.sort(key=lambda row: (-used.get(row[0].folder_name, 0.0), row[0].display_id.lower()))
    else:
        rows.sort(key=lambda row: (row[0].display_id.lower(), -row[1].last_modified))

    weights = {revision.snapshot_dir: weights_of(revision) for _, revision in rows}
    if as_json:
        # What rows of one repo share, worked out once per repo.
        shared = {
            id(repo): {
                "id": repo.display_id, "repo_id": repo.repo_id, "repo_type": repo.repo_type, "cache_dir": str(repo.cache_dir),
                "read_only": repo.read_only, "last_used": iso_utc(used[repo.folder_name]) if repo.folder_name in used else None,
            }
            for repo in repos
        }
        records = []
        for repo, revision in rows:
            common = shared[id(repo)]
            kind, quantizations = weights[revision.snapshot_dir]
            records.append({
                "id": common["id"],
                "repo_id": common["repo_id"],
                "repo_type": common["repo_type"],
                "revision": revision.commit,
                "refs": revision.sorted_refs,
                "size_bytes": revision.size_on_disk,
                "files": revision.nb_files,
                "format": kind,
                "quantizations": quantizations,
                "path": revision.snapshot_dir,
                "last_modified": iso_utc(revision.last_modified),
                "incomplete": revision.incomplete,
                "missing": list(revision.missing),
                "cache_dir": common["cache_dir"],
                "read_only": common["read_only"],
                "last_used": common["last_used"],
            })
        echo_json(records)
        return

    if not rows:
        if pattern and info.repos:
            click.echo(f"No cached model matches {pattern!r}. Run `modelmgr list` to see them all.")
        else:
            where = ", ".join(str(d) for d in info.cache_dirs)
            click.echo(f"The cache is empty ({where}). Pull a model with `modelmgr pull org/name`, for example `modelmgr pull Qwen/Qwen2.5-0.5B-Instruct`.")
        return

    import time

    now = time.time()
    notes = []
    for repo, revision in rows:
        note = []
        if revision.incomplete:
            note.append(f"incomplete ({len(revision.missing)} missing)")
        if repo.read_only:
            note.append("read-only")
        notes.append(", ".join(note))
    headers = ["ID", "REVISION", "SIZE", "FILES", "MODIFIED"]
    table = [
        [repo.display_id, revision.label, format_size(revision.size_on_disk), str(revision.nb_files), format_age(now - revision.last_modified)]
        for repo, revision in rows
    ]
    if any(weights[revision.snapshot_dir][0] == "gguf" for _, revision in rows):  # only once there is a GGUF to tell apart
        headers.append("FORMAT")
        for row, (_, revision) in zip(table, rows):
            kind, quants = weights[revision.snapshot_dir]
            row.append(f"{kind} {','.join(quants)}" if quants else (kind or "-"))
    if any(repo.folder_name in used for repo, _ in rows):  # only once something was run or loaded
        headers.append("LAST USED")
        for row, (repo, _) in zip(table, rows):
            row.append(format_age(now - used[repo.folder_name]) if repo.folder_name in used else "-")
    if any(notes):
        headers.append("STATUS")
        for row, note in zip(table, notes):
            row.append(note)
    click.echo(render_table(headers, table, right=(2, 3)))
    size = info.size_on_disk if len(repos) == len(info.repos) else unique_size(repos)
    shown = {repo.folder for repo, _ in rows}
    click.echo(f"\n{_kinds_summary(r for r in repos if r.folder in shown)}, {len(rows)} revision{'s' if len(rows) != 1 else ''}, {format_size(size)} on disk")
    if any(notes) and any(revision.incomplete for _, revision in rows):
        click.echo("Incomplete revisions miss files: pull them again to finish, or remove them with `modelmgr rm ID@REVISION`.")
