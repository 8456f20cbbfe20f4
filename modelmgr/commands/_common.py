"""What several commands share: loading the config with their flags, JSON output, tables."""
from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import click

from modelmgr.project.config import Config, load_config


def get_config(*, flags: dict[str, Any] | None = None, endpoints: Sequence[str] = ()) -> Config:
    """Load the layered config once per command, printing its warnings to stderr."""
    config = load_config(flags=flags, flag_endpoints=tuple(endpoints))
    for warning in config.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return config


def echo_json(data: Any) -> None:
    click.echo(dumps_indented(data))


def dumps_indented(data: Any) -> str:
    """``json.dumps(data, indent=2, default=str)``, byte for byte, for lists of flat records.

    With ``indent`` the json module falls back to its pure-Python encoder, which took a tenth of
    `list --json` on a large cache. Records of strings, integers, booleans, None and lists of
    strings (what the commands print) are written here instead: each shape of record (its keys,
    in order) becomes one %-template, filled with values the C string encoder quoted. Anything
    else goes to json.dumps itself."""
    import json  # only the --json paths pay for it
    from json.encoder import encode_basestring_ascii as quote

    constants = {None: "null", True: "true", False: "false"}

    def scalar(value: Any) -> str:  # a value one level down, as json.dumps(indent=2) writes it
        kind = type(value)
        if kind is str:
            return quote(value)
        if kind is int:
            return int.__repr__(value)
        if kind is bool or value is None:
            return constants[value]
        if kind is list:
            if not value:
                return "[]"
            if all(type(item) is str for item in value):
                return "[\n" + ",\n".join(["      " + quote(item) for item in value]) + "\n    ]"
        raise TypeError(kind)  # a float, a nested object: json.dumps formats those its own way

    if not isinstance(data, list) or not data or not all(type(row) is dict and row for row in data):
        return json.dumps(data, indent=2, default=str)
    templates: dict[tuple, str] = {}
    out = []
    try:
        for row in data:
            keys = tuple(row)
            template = templates.get(keys)
            if template is None:
                if not all(type(key) is str for key in keys):
                    raise TypeError(keys)
                template = templates[keys] = "  {\n" + ",\n".join(
                    f"    {quote(key).replace('%', '%%')}: %s" for key in keys) + "\n  }"
            out.append(template % tuple(map(scalar, row.values())))
    except TypeError:
        return json.dumps(data, indent=2, default=str)
    return "[\n" + ",\n".join(out) + "\n]"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()) -> str:
    """A plain aligned table (no box drawing: it must survive pipes, logs and narrow terminals)."""
    rows = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def confirm(question: str, *, yes: bool) -> None:
    """Ask before destroying anything; without a terminal, insist on -y rather than hang."""
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise click.UsageError("refusing to delete without confirmation: stdin is not a terminal. Pass -y to confirm.")
    import contextlib

    # Under --quiet stdout is silenced, but a question must still be seen.
    with contextlib.redirect_stdout(_silenced[-1]) if _silenced else contextlib.nullcontext():
        if not click.confirm(question, default=False):
            raise click.Abort()


_silenced: list = []  # the real stdout of each command running under --quiet


def quiet_option(function):
    """``-q/--quiet``: print nothing on success (errors and warnings still go to stderr)."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, quiet: bool = False, **kwargs):
        if not quiet:
            return function(*args, **kwargs)
        import contextlib
        import io

        _silenced.append(sys.stdout)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return function(*args, **kwargs)
        finally:
            _silenced.pop()

    return click.option("-q", "--quiet", is_flag=True, help="Print nothing on success; errors still go to stderr.")(wrapper)


def pull_options(function):
    """Options every command that may download shares (pull, run, show, sync)."""
    function = click.option("--offline", is_flag=True, default=None, help="Use only the cache; open no socket (HF_HUB_OFFLINE).")(function)
    function = click.option(
        "--endpoint", "endpoints", multiple=True, metavar="URL",
        help="Hub endpoint or mirror; repeat for an ordered fallback list (before HF_ENDPOINT and the config).",
    )(function)
    return function


REPO_TYPE_PREFIXES = {"model:": "model", "dataset:": "dataset", "space:": "space"}


def split_repo_type(text: str) -> tuple[str, str]:
    """``dataset:org/name`` (as ``modelmgr list`` prints it) -> ("dataset", "org/name")."""
    for prefix, repo_type in REPO_TYPE_PREFIXES.items():
        if text.startswith(prefix):
            return repo_type, text[len(prefix):]
    return "model", text


def matches(pattern: str | None, repo) -> bool:
    """fnmatch on the ID, case-insensitive as on the Hub; a pattern without wildcards matches a substring."""
    if not pattern:
        return True
    import fnmatch

    pattern = pattern.lower()
    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    return fnmatch.fnmatchcase(repo.repo_id.lower(), pattern) or fnmatch.fnmatchcase(repo.display_id.lower(), pattern)
