"""`modelmgr lock` and `modelmgr sync`: pin the project's models, then reproduce them exactly."""
from __future__ import annotations

import click

from modelmgr.commands._common import echo_json, get_config, quiet_option


@click.command()
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="Hub endpoint or mirror (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print what was locked as JSON.")
def lock(endpoints, as_json):
    """Resolve every [models.*] of the project config to a commit and write modelmgr.lock."""
    from modelmgr.fetch.lock import build_lock
    from modelmgr.project.lockfile import default_lock_path, write_lock
    from modelmgr.units import format_size

    config = get_config(endpoints=endpoints)
    models = build_lock(config)
    path = default_lock_path()
    write_lock(path, models)
    if as_json:
        echo_json({"path": str(path), "models": [
            {"name": m.name, "id": m.id, "revision": m.revision, "commit": m.commit, "files": len(m.files)} for m in models]})
        return
    for m in models:
        size = sum(f.size for f in m.files)
        click.echo(f"{m.name}: {m.id}@{m.revision} -> {m.commit[:12]} ({len(m.files)} files, {format_size(size)})")
    click.echo(f"Wrote {path}")


@click.command()
@click.option("--frozen", is_flag=True, help="Fail if the lock is missing or does not match the config.")
@click.option("--offline", is_flag=True, default=None, help="Use only the cache; verify what is there.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="Hub endpoint or mirror (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
def sync(frozen, offline, endpoints, as_json):
    """Bring the cache to exactly modelmgr.lock and verify every file's hash."""
    from modelmgr.errors import ConfigError
    from modelmgr.project.lockfile import default_lock_path, mismatches, read_lock
    from modelmgr.fetch.lock import sync as run_sync

    config = get_config(flags={"hub.offline": offline}, endpoints=endpoints)
    lock_file = read_lock(default_lock_path())
    problems = mismatches(lock_file, config)
    if problems and frozen:
        raise ConfigError(f"{lock_file.path} does not match the config ({'; '.join(problems)}): run `modelmgr lock`.")
    for problem in problems:
        click.echo(f"Warning: {problem}; syncing what the lock says.", err=True)
    results = run_sync(lock_file, config)
    if as_json:
        echo_json([{"name": r.name, "id": r.id, "commit": r.commit, "files": r.files, "downloaded": r.downloaded,
                    "path": str(r.path)} for r in results])
        return
    for r in results:
        click.echo(f"{r.name}: {r.id}@{r.commit[:12]} ok ({r.files} files verified, {r.downloaded} downloaded)")
