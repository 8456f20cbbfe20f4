"""Layered TOML configuration resolved into one frozen ``Config``.

Layers, lowest first: built-in defaults < system file < user file (or ``MODELMGR_CONFIG``) <
project ``modelmgr.toml`` (the working directory or a parent) < environment < command-line flags.
Every effective value remembers which layer it came from, for ``modelmgr config show``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from modelmgr.errors import ConfigError, InvalidReference
from modelmgr.fsutil import read_small
from modelmgr.project.files import (  # noqa: F401 - PROJECT_FILE, read_toml: re-exported for callers
    PROJECT_FILE, find_project_file, line_of_key, project_lock_path, read_toml, untrusted_warning, written_by_user,
)
from modelmgr.project.refs import validate_repo_id, validate_revision
from modelmgr.units import parse_size


HUGGINGFACE_CO = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Endpoint:
    url: str
    name: str
    timeout: float = 30.0
    send_token: bool = False

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].split("/", 1)[0].lower()


@dataclass(frozen=True)
class ModelAlias:
    name: str
    id: str
    revision: str | None = None
    backend: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    locked_commit: str | None = None  # from modelmgr.lock, when it locks this alias as configured


@dataclass(frozen=True)
class Config:
    cache_dirs: tuple[Path, ...]
    endpoints: tuple[Endpoint, ...]
    offline: bool = False
    connections: int = 32
    max_cache_size: int | None = None
    backend: str = "auto"
    dtype: str = "auto"
    max_memory: int | None = None
    disabled_plugins: tuple[str, ...] = ()
    models: Mapping[str, ModelAlias] = field(default_factory=dict)
    token: str | None = field(default=None, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict, repr=False)
    files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def cache_dir(self) -> Path:
        """Where modelmgr writes: the first cache directory it can write to. The others are only
        read, so a personal cache can sit in front of a read-only team cache."""
        for directory in self.cache_dirs:
            if _writable(directory):
                return directory
        return self.cache_dirs[0]  # nothing is writable: let the write fail with the OS's reason

    @property
    def scan_dirs(self) -> tuple[Path, ...]:
        """Every cache directory, the writable one first (a scan marks the rest read-only)."""
        first = self.cache_dir
        return (first, *(d for d in self.cache_dirs if d != first))

    def aliases(self) -> dict[str, tuple[str, str | None]]:
        return {name: (alias.id, alias.locked_commit or alias.revision) for name, alias in self.models.items()}


def _writable(directory: Path) -> bool:
    """An existing folder we may write in, or one we could create."""
    path = directory
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"invalid value {value!r} for {key}: use true or false.")


def _as_positive_int(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf in a TOML file
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ConfigError(f"invalid value {value!r} for {key}: use a whole number of at least 1.")
    return number


def _as_seconds(value: Any, key: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf") or isinstance(value, bool):
        raise ConfigError(f"invalid value {value!r} for {key}: use a number of seconds above 0, for example 10.")
    return seconds


def _as_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"invalid value {value!r} for {key}: use a string.")
    return value


def _as_str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"invalid value {value!r} for {key}: use a list of strings.")
    return list(value)


def _as_size(value: Any, key: str) -> int:
    # TOML's `true` is an int to Python, and a size of -5 means nothing: both are mistakes to name.
    if isinstance(value, bool) or not isinstance(value, (int, str)) or isinstance(value, int) and value < 0:
        raise ConfigError(f"invalid value {value!r} for {key}: use a size of 0 or more, for example 50G, 1.5GB or 500MiB.")
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _as_endpoint_list(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) and "url" in v for v in value):
        raise ConfigError(f"invalid value for {key}: use [[hub.endpoints]] tables, each with a url.")
    return value


# The dotted keys a config file may set: (parser, default, one line of documentation).
SCHEMA: dict[str, tuple[Callable[[Any, str], Any], Any, str]] = {
    "cache.dir": (_as_str, None, "the cache modelmgr writes to (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)"),
    "cache.dirs": (_as_str_list, [], "read-only caches searched after cache.dir, for example a team's shared cache"),
    "cache.max_size": (_as_size, None, "prune least recently used models before a pull would exceed this size"),
    "hub.endpoint": (_as_str, None, "one Hub endpoint, like HF_ENDPOINT"),
    "hub.endpoints": (_as_endpoint_list, [], "ordered fallback endpoints: url, name, timeout, send_token"),
    "hub.offline": (_as_bool, False, "never open a socket; serve only what is cached (HF_HUB_OFFLINE)"),
    "hub.connections": (_as_positive_int, 32, "parallel connections per pull"),
    "hub.timeout": (lambda v, k: _as_seconds(v, k), 30.0, "seconds without data before an endpoint counts as failed"),
    "run.backend": (_as_str, "auto", "backend for run and load: auto, cpu, cuda, int8 or a plugin's"),
    "run.dtype": (_as_str, "auto", "auto, float32, bfloat16 or float16"),
    "run.max_memory": (_as_size, None, "cap on the memory a model may take, for backend selection"),
    "plugins.disabled": (_as_str_list, [], "plugins not to load, by entry-point name"),
}

# Environment variables and the key each sets. Ordered lowest precedence first.
ENVIRONMENT: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("HF_HOME", "cache.dir", lambda v: str(Path(v).expanduser() / "hub")),
    ("HUGGINGFACE_HUB_CACHE", "cache.dir", str),
    ("HF_HUB_CACHE", "cache.dir", str),
    ("MODELMGR_CACHE_DIR", "cache.dir", str),
    ("HF_ENDPOINT", "hub.endpoint", str),
    ("MODELMGR_ENDPOINT", "hub.endpoint", str),
    ("HF_HUB_OFFLINE", "hub.offline", str),
    ("MODELMGR_OFFLINE", "hub.offline", str),
    ("MODELMGR_CONNECTIONS", "hub.connections", str),
    ("MODELMGR_BACKEND", "run.backend", str),
    ("MODELMGR_MAX_MEMORY", "run.max_memory", str),
    ("MODELMGR_CACHE_MAX_SIZE", "cache.max_size", str),
)

MODEL_KEYS = {"id", "revision", "backend", "dtype", "trust_remote_code"}


def default_hf_home(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(environ.get("HF_HOME") or os.path.join(xdg, "huggingface")).expanduser()


def config_files(*, cwd: Path | None = None, environ: Mapping[str, str] | None = None,
                 skipped: list[Path] | None = None) -> list[tuple[str, Path]]:
    """The files consulted, lowest precedence first, whether or not they exist. Project files
    another user owns are not consulted; ``skipped`` collects them."""
    import platformdirs  # ~10 ms; only needed when a config is actually loaded

    environ = os.environ if environ is None else environ
    files = [("system", Path(platformdirs.site_config_dir("modelmgr")) / "config.toml")]
    explicit = environ.get("MODELMGR_CONFIG")
    files.append(("user", Path(explicit).expanduser() if explicit else Path(platformdirs.user_config_dir("modelmgr")) / "config.toml"))
    project = find_project_file(cwd or Path.cwd(), skipped=skipped)
    if project is not None:
        files.append(("project", project))
    return files


def _flatten(document: dict, path: Path, warnings: list[str]) -> tuple[dict[str, Any], dict[str, dict]]:
    """Split a parsed file into dotted settings and model aliases, warning about unknown keys."""
    flat: dict[str, Any] = {}
    models: dict[str, dict] = {}
    for section, body in document.items():
        if section == "models":
            if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
                raise ConfigError(f"{path}: [models] must hold tables like [models.NAME] with an id.")
            for name, table in body.items():
                for key in table:
                    if key not in MODEL_KEYS:
                        warnings.append(_unknown(path, f"models.{name}.{key}", [f"models.{name}.{k}" for k in MODEL_KEYS]))
                models[name] = table
            continue
        if not isinstance(body, dict):
            warnings.append(_unknown(path, section, list(SCHEMA)))
            continue
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if dotted in SCHEMA:
                flat[dotted] = value
            else:
                warnings.append(_unknown(path, dotted, list(SCHEMA)))
    return flat, models


def _unknown(path: Path, key: str, valid: list[str]) -> str:
    import difflib  # only for a typo in a config file
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{path}: unknown key '{key}' ignored.{hint}"


def load_config(
    *,
    flags: Mapping[str, Any] | None = None,
    flag_endpoints: tuple[str, ...] = (),
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve every layer into one Config. ``flags`` maps dotted keys to command-line values."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {key: default for key, (_, default, _) in SCHEMA.items()}
    sources: dict[str, str] = {key: "default" for key in SCHEMA}
    models: dict[str, tuple[dict, str]] = {}
    warnings: list[str] = []
    consulted: list[Path] = []
    skipped: list[Path] = []
    untrusted_endpoints = None  # the project file that set hub.endpoints without being the user's own

    files = config_files(cwd=cwd, environ=environ, skipped=skipped)
    warnings.extend(untrusted_warning(path) for path in skipped)
    for layer, path in files:
        consulted.append(path)
        if not path.is_file():
            if layer == "user" and environ.get("MODELMGR_CONFIG"):
                raise ConfigError(f"MODELMGR_CONFIG names {path}, which does not exist. Create it or unset MODELMGR_CONFIG.")
            continue
        flat, file_models = _flatten(read_toml(path), path, warnings)
        for key, value in flat.items():
            line = line_of_key(path, key)
            values[key] = SCHEMA[key][0](value, f"{key} in {path}" + (f", line {line}" if line else ""))
            sources[key] = f"{layer} file {path}"
            if key == "hub.endpoints":
                untrusted_endpoints = None if layer != "project" or written_by_user(path) else path
        for name, table in file_models.items():
            models[name] = (table, f"{layer} file {path}")

    for variable, key, convert in ENVIRONMENT:
        raw = environ.get(variable)
        if raw is None or raw == "":  # set but empty counts as unset, as in a shell
            continue
        values[key] = SCHEMA[key][0](convert(raw), f"{key} (from ${variable})")
        sources[key] = f"environment ${variable}"

    for key, value in (flags or {}).items():
        if value is None:
            continue
        values[key] = SCHEMA[key][0](value, key)
        sources[key] = "command line"

    cache_default = default_hf_home(environ) / "hub"
    first = Path(values["cache.dir"]).expanduser() if values["cache.dir"] else None
    extra = [Path(d).expanduser() for d in values["cache.dirs"]]
    if first is None:
        first = extra.pop(0) if extra else cache_default
        if sources["cache.dir"] == "default" and sources["cache.dirs"] != "default":
            sources["cache.dir"] = sources["cache.dirs"]
    cache_dirs = tuple(dict.fromkeys([first, *extra]))
    values["cache.dir"] = str(first)

    timeout = float(values["hub.timeout"])
    listed_in = sources["hub.endpoints"].split(" file ", 1)[-1]  # where a bad field is, for the message
    endpoints: list[Endpoint] = [Endpoint(url, url, timeout) for url in flag_endpoints]
    if flag_endpoints:
        sources["hub.endpoints"] = "command line"
    if values["hub.endpoint"]:
        endpoints.append(Endpoint(values["hub.endpoint"], values["hub.endpoint"], timeout))
    for table in values["hub.endpoints"]:
        send_token = _as_bool(table.get("send_token", False), f"hub.endpoints.send_token in {listed_in}")
        if send_token and untrusted_endpoints is not None:
            # Where the token may go is decided only by files the user wrote: root's project file
            # in a shared folder may choose mirrors, not receive the user's HF_TOKEN.
            warnings.append(f"{untrusted_endpoints}: send_token ignored for {table['url']}: only a file you own may "
                            "send your token to an endpoint. Set it in your own config.")
            send_token = False
        endpoints.append(
            Endpoint(
                url=_as_str(table["url"], f"hub.endpoints.url in {listed_in}"),
                name=str(table.get("name") or table["url"]),
                timeout=_as_seconds(table.get("timeout", timeout), f"hub.endpoints.timeout in {listed_in}"),
                send_token=send_token,
            )
        )
    if not endpoints:
        endpoints.append(Endpoint(HUGGINGFACE_CO, "huggingface.co", timeout, send_token=True))
    unique: dict[str, Endpoint] = {}
    for endpoint in endpoints:
        endpoint = Endpoint(endpoint.url.rstrip("/"), endpoint.name, endpoint.timeout, endpoint.send_token)
        if not endpoint.url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid endpoint {endpoint.url!r}: it must start with http:// or https://.")
        unique.setdefault(endpoint.url, endpoint)

    locked_commits = _locked_commits(cwd or Path.cwd()) if models else {}
    aliases = {}
    for name, (table, where) in models.items():
        if "id" not in table:
            raise ConfigError(f"[models.{name}] in {where.split(' file ', 1)[-1]} has no id: add id = \"org/name\".")
        place = where.split(" file ", 1)[-1]
        alias_id = _as_str(table["id"], f"models.{name}.id in {place}")
        revision = table.get("revision")
        try:
            validate_repo_id(alias_id)
            if revision is not None:
                validate_revision(_as_str(revision, f"models.{name}.revision in {place}"), repo_id=alias_id)
        except InvalidReference as exc:
            raise ConfigError(f"[models.{name}] in {where.split(' file ', 1)[-1]}: {exc}") from None
        locked = locked_commits.get((name, alias_id, revision or "main"))
        aliases[name] = ModelAlias(
            name=name,
            id=alias_id,
            revision=revision,
            backend=_optional_str(table.get("backend"), f"models.{name}.backend in {place}"),
            dtype=_optional_str(table.get("dtype"), f"models.{name}.dtype in {place}"),
            trust_remote_code=_as_bool(table.get("trust_remote_code", False), f"models.{name}.trust_remote_code in {place}"),
            locked_commit=locked,
        )
        sources[f"models.{name}"] = where

    return Config(
        cache_dirs=cache_dirs,
        endpoints=tuple(unique.values()),
        offline=bool(values["hub.offline"]),
        connections=int(values["hub.connections"]),
        max_cache_size=values["cache.max_size"],
        backend=values["run.backend"],
        dtype=values["run.dtype"],
        max_memory=values["run.max_memory"],
        disabled_plugins=tuple(values["plugins.disabled"]),
        models=MappingProxyType(aliases),
        token=_find_token(environ),
        sources=MappingProxyType(sources),
        files=tuple(consulted),
        warnings=tuple(warnings),
    )


def _optional_str(value: Any, key: str) -> str | None:
    return None if value is None else _as_str(value, key)


def _locked_commits(cwd: Path) -> dict[tuple[str, str, str], str]:
    """(alias, id, revision) -> commit from the project's modelmgr.lock, if there is a valid one.

    Parsed by lockfile.read_lock, the one reader of the format. A broken or foreign lock pins
    nothing here: it matters only to the commands that use the lock (`lock --check`, `sync`),
    which report it."""
    from modelmgr.project.lockfile import read_lock

    path = project_lock_path(cwd)
    if not path.is_file():
        return {}
    try:
        lock = read_lock(path)
    except ConfigError:
        return {}
    return {(m.name, m.id, m.revision): m.commit for m in lock.models}


def _find_token(environ: Mapping[str, str]) -> str | None:
    """HF_TOKEN, else the token ``hf auth login`` stored; never logged anywhere."""
    token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN")
    where = "HF_TOKEN"
    if not token:
        path = Path(environ.get("HF_TOKEN_PATH") or default_hf_home(environ) / "token")
        where = str(path)
        try:
            # Read like any file a shared HF_HOME may hold: a FIFO planted there must not hang
            # every command, nor a huge file be read whole.
            token = read_small(path, 4096)
        except FileNotFoundError:
            return None
        except OSError:
            return None
        except ValueError:
            raise ConfigError(f"{path} is not a token file (a small text file holding the token alone): "
                              "replace it with `hf auth login`, or set HF_TOKEN.") from None
    token = token.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        # Never echo the value: it is a credential.
        raise ConfigError(f"the token in {where} contains spaces, line breaks or control characters: "
                          "set it to the token alone (hf auth login, or HF_TOKEN=hf_...).")
    return token or None
