"""Finding and reading the project's files (``modelmgr.toml``, ``modelmgr.lock``), which may sit in any
parent of the working directory, including world-writable ones such as the temp dir.

Anyone can leave a ``modelmgr.toml`` in ``/tmp``; a user working in ``/tmp/x`` would otherwise take
its endpoints and ``send_token`` and hand their HF_TOKEN to the planter's server. So, as git's
``safe.directory`` does, a project file is used only when it belongs to the user or to root; any
other is ignored with one warning line.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from modelmgr.errors import ConfigError

PROJECT_FILE = "modelmgr.toml"
LOCK_FILE = "modelmgr.lock"
MAX_BYTES = 16 << 20  # a config or lockfile of more is no config: refuse it rather than read it all


def current_uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def owner(path: Path) -> int | None:
    try:
        return os.stat(path).st_uid
    except (OSError, AttributeError):
        return None


def trusted(path: Path) -> bool:
    """Whether a project file may be used: owned by this user or by root (or no owners here)."""
    uid = current_uid()
    return uid == -1 or owner(path) in (uid, 0)


def written_by_user(path: Path) -> bool:
    """Whether this very user owns the file: only such a file may say where the token goes."""
    uid = current_uid()
    return uid == -1 or owner(path) == uid


def untrusted_warning(path: Path) -> str:
    return (f"{path} ignored: it belongs to uid {owner(path)}, not to you or root, so another user may have "
            f"planted it. Take it over (chown) or remove it if it is yours.")


def find_project_file(start: Path, name: str = PROJECT_FILE, *, skipped: list[Path] | None = None) -> Path | None:
    """The nearest trusted ``name`` in ``start`` or a parent; untrusted ones are passed over
    (and listed in ``skipped``)."""
    for folder in (start, *start.parents):
        candidate = folder / name
        if candidate.is_file():
            if trusted(candidate):
                return candidate
            if skipped is not None:
                skipped.append(candidate)
    return None


def project_lock_path(cwd: Path | None = None) -> Path:
    """``modelmgr.lock`` beside the project file, or in the working directory without one."""
    cwd = cwd or Path.cwd()
    project = find_project_file(cwd)
    return (project.parent if project else cwd) / LOCK_FILE


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, max(0, offset)) + 1


def read_toml(path: Path) -> dict:
    """A TOML file as a dict, or ConfigError naming the file and the line of what is wrong."""
    # Imported here: most runs have no config file at all and should not pay for the parser.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}.") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_BYTES >> 20} MiB: that is no modelmgr file. Point modelmgr at the right one.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}, line {_line_of(data, exc.start)}: byte 0x{data[exc.start]:02x} is not UTF-8. "
                          "Save the file as UTF-8.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}. Fix the file or set MODELMGR_CONFIG to another one.") from None
    except RecursionError:
        raise ConfigError(f"invalid TOML in {path}: nested too deeply. Fix the file.") from None


def line_of_key(path: Path, dotted: str) -> int | None:
    """The line that sets ``section.key`` in a simple TOML file (for messages; None if not found)."""
    section, _, key = dotted.rpartition(".")
    current = ""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[] ")
        elif current == section and stripped.split("=", 1)[0].strip() == key and "=" in stripped:
            return number
    return None
