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
from modelmgr.project.dirs import system_config_dir, user_config_dir
from modelmgr.project.endpoints import Endpoint, make_endpoint, merge_endpoints, redact_url
from modelmgr.project.files import (  # noqa: F401 - PROJECT_FILE, read_toml: re-exported for callers
    PROJECT_FILE, find_project_file, line_of_key, project_lock_path, read_toml, untrusted_warning, written_by_user,
)
from modelmgr.project.refs import validate_repo_id, validate_revision
from modelmgr.project.values import (
    _as_bool, _as_endpoint_list, _as_positive_int, _as_seconds, _as_size, _as_str, _as_str_list,
)

__all__ = ["Config", "Endpoint", "ModelAlias", "load_config", "redact_url"]


HUGGINGFACE_CO = "https://huggingface.co"


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
    metadata_timeout: float | None = None
    download_timeout: float | None = None
    proxy: str | None = field(default=None, repr=False)  # may hold a password
    no_proxy: tuple[str, ...] = ()
    ca_bundle: str | None = None
    progress: bool = True
    max_cache_size: int | None = None
    backend: str = "auto"
    dtype: str = "auto"
    max_memory: int | None = None
    disabled_plugins: tuple[str, ...] = ()
    models: Mapping[str, ModelAlias] = field(default_factory=dict)
    serve: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the serve.* keys, prefix dropped
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
    "hub.metadata_timeout": (_as_seconds, None, "seconds for a metadata answer (revision, tree, file headers); default hub.timeout"),
    "hub.download_timeout": (_as_seconds, None, "seconds without body bytes while downloading a file; default hub.timeout"),
    "hub.proxy": (_as_str, None, "proxy URL for every endpoint (http://[user:pass@]host:port); else HTTPS_PROXY and friends"),
    "hub.no_proxy": (_as_str_list, [], "hosts reached directly, as NO_PROXY: names, .suffixes, host:port, IPs, CIDRs, *"),
    "hub.ca_bundle": (_as_str, None, "PEM file of CA certificates to trust (like SSL_CERT_FILE / REQUESTS_CA_BUNDLE)"),
    "ui.progress": (_as_bool, True, "progress bars on a terminal (HF_HUB_DISABLE_PROGRESS_BARS=1 turns them off)"),
    "run.backend": (_as_str, "auto", "backend for run and load: auto, cpu, cuda, int8 or a plugin's"),
    "run.dtype": (_as_str, "auto", "auto, float32, bfloat16 or float16"),
    "run.max_memory": (_as_size, None, "cap on the memory a model may take, for backend selection"),
    "plugins.disabled": (_as_str_list, [], "plugins not to load, by entry-point name"),
    # `modelmgr serve`; modelmgr/serve/settings.py gives them meaning (MODELMGR_HOST beats host and port).
    "serve.host": (_as_str, None, "address serve listens on (default 127.0.0.1; others need an api_key)"),
    "serve.port": (_as_positive_int, None, "port serve listens on (default 11435)"),
    "serve.api_key": (_as_str, None, "key clients must send as Authorization: Bearer KEY (MODELMGR_API_KEY)"),
    "serve.keep_alive": (_as_str, "5m", "how long a model stays loaded after its last request: 30s, 5m, 1h, 0, -1 (forever)"),
    "serve.max_loaded": (_as_positive_int, None, "most models loaded at once (default: as many as the budget holds)"),
    "serve.max_memory": (_as_size, None, "memory budget for all loaded models together (default: run.max_memory, else free memory)"),
    "serve.parallel": (_as_positive_int, 8, "generations run at once per model (batched where the backend can)"),
    "serve.max_queue": (_as_positive_int, 64, "requests waiting per model before 429"),
    "serve.pull": (_as_bool, False, "pull a model a request names that is not cached, instead of answering 404"),
    "serve.preload": (_as_str_list, [], "models (IDs or aliases) to load at start"),
    "serve.cors_origins": (_as_str_list, [], "origins browsers may call the server from (default: none)"),
}

# Environment variables and the key each sets. Ordered lowest precedence first.
ENVIRONMENT: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("HF_HOME", "cache.dir", lambda v: str(Path(v).expanduser() / "hub")),
    ("HUGGINGFACE_HUB_CACHE", "cache.dir", str),
    ("HF_HUB_CACHE", "cache.dir", str),
    ("MODELMGR_CACHE_DIR", "cache.dir", str),
    ("HF_ENDPOINT", "hub.endpoint", str),
    ("MODELMGR_ENDPOINT", "hub.endpoint", str),
    ("TRANSFORMERS_OFFLINE", "hub.offline", str),  # huggingface_hub honours it as HF_HUB_OFFLINE's fallback
    ("HF_HUB_OFFLINE", "hub.offline", str),
    ("HF_HUB_ETAG_TIMEOUT", "hub.metadata_timeout", str),
    ("HF_HUB_DOWNLOAD_TIMEOUT", "hub.download_timeout", str),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "ui.progress", lambda v: "false" if v.strip().lower() in ("1", "true", "yes", "on") else "true"),
    ("MODELMGR_OFFLINE", "hub.offline", str),
    ("MODELMGR_CONNECTIONS", "hub.connections", str),
    ("MODELMGR_BACKEND", "run.backend", str),
    ("MODELMGR_MAX_MEMORY", "run.max_memory", str),
    ("MODELMGR_CACHE_MAX_SIZE", "cache.max_size", str),
    ("MODELMGR_API_KEY", "serve.api_key", str),
)

MODEL_KEYS = {"id", "revision", "backend", "dtype", "trust_remote_code"}


def default_hf_home(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(environ.get("HF_HOME") or os.path.join(xdg, "huggingface")).expanduser()


def config_files(*, cwd: Path | None = None, environ: Mapping[str, str] | None = None,
                 skipped: list[Path] | None = None) -> list[tuple[str, Path]]:
    """The files consulted, lowest precedence first, whether or not they exist. Project files
    another user owns are not consulted; ``skipped`` collects them."""
    environ = os.environ if environ is None else environ
    files = [("system", system_config_dir(environ) / "config.toml")]
    explicit = environ.get("MODELMGR_CONFIG")
    files.append(("user", Path(explicit).expanduser() if explicit else user_config_dir(environ) / "config.toml"))
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
    table_source = sources["hub.endpoints"].split(" file ", 1)[-1]  # where a bad field is, for the message
    endpoints: list[Endpoint] = [
        make_endpoint(url, name=None, timeout=timeout, send_token=False, source="--endpoint") for url in flag_endpoints]
    if flag_endpoints:
        sources["hub.endpoints"] = "command line"
    if values["hub.endpoint"]:
        where = sources["hub.endpoint"].replace("environment ", "")
        endpoints.append(make_endpoint(values["hub.endpoint"], name=None, timeout=timeout, send_token=False, source=where))
    for table in values["hub.endpoints"]:
        send_token = _as_bool(table.get("send_token", False), f"hub.endpoints.send_token in {table_source}")
        if send_token and untrusted_endpoints is not None:
            # Where the token may go is decided only by files the user wrote: root's project file
            # in a shared folder may choose mirrors, not receive the user's HF_TOKEN.
            warnings.append(f"{untrusted_endpoints}: send_token ignored for {table['url']}: only a file you own may "
                            "send your token to an endpoint. Set it in your own config.")
            send_token = False
        endpoints.append(make_endpoint(
            _as_str(table["url"], f"hub.endpoints.url in {table_source}"),
            name=str(table["name"]) if table.get("name") else None,
            timeout=_as_seconds(table.get("timeout", timeout), f"hub.endpoints.timeout in {table_source}"),
            send_token=send_token,
            source=f"[[hub.endpoints]] in {table_source}",
        ))
    if not endpoints:
        endpoints.append(Endpoint(HUGGINGFACE_CO, "huggingface.co", timeout, send_token=True, source="default"))
    unique = merge_endpoints(endpoints)

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
        endpoints=unique,
        offline=bool(values["hub.offline"]),
        connections=int(values["hub.connections"]),
        metadata_timeout=values["hub.metadata_timeout"],
        download_timeout=values["hub.download_timeout"],
        proxy=values["hub.proxy"] or None,
        no_proxy=tuple(values["hub.no_proxy"]),
        ca_bundle=values["hub.ca_bundle"] or None,
        progress=bool(values["ui.progress"]),
        max_cache_size=values["cache.max_size"],
        backend=values["run.backend"],
        dtype=values["run.dtype"],
        max_memory=values["run.max_memory"],
        disabled_plugins=tuple(values["plugins.disabled"]),
        models=MappingProxyType(aliases),
        serve=MappingProxyType({key[6:]: value for key, value in values.items() if key.startswith("serve.")}),
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
