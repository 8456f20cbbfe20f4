"""`modelmgr pull`: download what a model needs into the shared cache."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config, pull_options, quiet_option


@click.command()
@click.argument("ref")
@click.option("--include", multiple=True, metavar="GLOB", help="Fetch only files matching GLOB (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching GLOB (repeatable).")
@click.option("--all-files", is_flag=True, help="Fetch every file of the repo, not just what a load needs.")
@click.option("--connections", type=click.IntRange(1, 64), default=None, help="Parallel connections (default 32).")
@click.option("--dry-run", is_flag=True, help="Show what would be fetched, and how much, without fetching.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--local-dir", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Also copy the snapshot's files into DIR as plain files (the cache stays the source).")
@pull_options
@quiet_option
def pull(ref, include, exclude, all_files, connections, dry_run, as_json, local_dir, endpoints, offline):
    """Download a model (org/name[:QUANT][@revision]) into the cache.

    \b
    Fetches what from_pretrained needs: config, tokenizer, chat template and one copy
    of the weights (safetensors when present). From a GGUF repo, one quantization:
    org/name:Q4_K_M names it; without a tag, Q4_K_M when present, else the nearest
    that fits the memory here, else the smallest (--dry-run says which and why).
    Interrupted pulls resume; every file is verified against its hash before it
    appears in the cache.
    """
    from modelmgr.fetch.pull import pull as run_pull
    from modelmgr.run.memory import free_ram
    from modelmgr.units import format_size
    from modelmgr.commands._progress import pull_progress

    config = get_config(flags={"hub.offline": offline, "hub.connections": connections}, endpoints=endpoints)
    quiet = click.get_current_context().params.get("quiet", False)
    with pull_progress(not as_json and not quiet, only_downloads=False, bars=config.progress) as on_event:
        result = run_pull(ref, config=config, include=include, exclude=exclude, all_files=all_files,
                          dry_run=dry_run, on_event=on_event, free_memory=free_ram())
    exported = None
    if local_dir is not None and not result.dry_run:
        from pathlib import Path

        from modelmgr.cache.export import export_snapshot

        names = [f.path for f in result.plan.files] if result.plan else sorted(
            p.relative_to(result.snapshot.path).as_posix() for p in result.snapshot.path.rglob("*") if p.is_file())
        exported = export_snapshot(result.snapshot.path, names, Path(local_dir))

    plan = result.plan
    if as_json:
        echo_json({
            "id": result.snapshot.repo_id,
            "revision": result.snapshot.revision,
            "commit": result.snapshot.commit,
            "path": str(result.snapshot.path),
            "dry_run": result.dry_run,
            "downloaded_files": result.downloaded,
            "reused_files": result.reused,
            "seconds": round(result.seconds, 3),
            "files": [
                {"path": f.path, "size": f.size, "etag": f.etag, "cached": f.cached} for f in (plan.files if plan else ())
            ],
            "note": plan.note if plan else None,
            "fetch_bytes": plan.fetch_bytes if plan else 0,
            "total_bytes": plan.total_bytes if plan else 0,
            "local_dir": str(exported.folder) if exported else None,
        })
        return
    snap = result.snapshot
    if plan is None:
        click.echo(f"{snap.repo_id}@{snap.revision} is in the cache ({snap.commit[:8]}); offline, nothing checked.")
        click.echo(f"  {snap.path}")
        return
    if result.dry_run:
        click.echo(f"{snap.repo_id}@{plan.revision} -> commit {plan.commit[:8]} on {plan.endpoint}")
        if plan.note:
            click.echo(f"  {plan.note}")
        width = max(len(f.path) for f in plan.files)
        for f in plan.files:
            state = "cached" if f.cached else (f"partial {format_size(f.partial_bytes)}" if f.partial_bytes else "")
            click.echo(f"  {f.path:<{width}}  {format_size(f.size):>10}  {state}".rstrip())
        click.echo(f"Would fetch {len(plan.to_fetch)} of {len(plan.files)} files, {format_size(plan.fetch_bytes)} "
                   f"(total {format_size(plan.total_bytes)}; {len(plan.skipped)} files of the repo skipped).")
        return
    click.echo(
        f"Pulled {snap.repo_id}@{plan.revision} ({snap.commit[:8]}): {len(plan.files)} files, "
        f"{format_size(plan.fetch_bytes)} downloaded, {result.reused} already cached, in {result.seconds:.1f}s."
    )
    click.echo(f"  {snap.path}")
    if exported is not None:
        click.echo(f"Copied to {exported.folder} ({exported.copied} files copied, {exported.kept} already there).")
