"""What `modelmgr serve` runs with, and where its clients (`ps`, `stop`, `run`) find it.

Light on purpose: the client commands import this and must start fast, so nothing of the
server stack (starlette, uvicorn, torch) is imported here.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from modelmgr.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config

DEFAULT_HOST = "127.0.0.1"
# ollama's port plus one: both can run on one machine, and clients configured for one are
# pointed at the other by changing a digit.
DEFAULT_PORT = 11435
HOST_VARIABLE = "MODELMGR_HOST"
KEY_VARIABLE = "MODELMGR_API_KEY"
MAX_BODY_BYTES = 4 * 1024**2  # a long conversation is a few hundred kB; more is a mistake or an attack
MAX_TOKENS_CAP = 4096  # the most a request may ask for, whatever it says


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def client_url(self) -> str:
        """Where a client on this machine reaches a server bound to this address."""
        if self.host in ("0.0.0.0", "::", ""):
            return Address(DEFAULT_HOST, self.port).url
        return self.url


def parse_address(text: str, *, where: str, default_port: int = DEFAULT_PORT) -> Address:
    """``host``, ``host:port``, ``:port``, ``[v6]:port`` or ``http://host:port`` (as OLLAMA_HOST)."""
    raw = text.strip()
    body = re.sub(r"^https?://", "", raw).rstrip("/")
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]/]*)(?::(\d+))?", body)
    if not match or (body.count(":") > 1 and not body.startswith("[")):
        raise ConfigError(f"invalid address {raw!r} in {where}: use host:port, for example 127.0.0.1:{DEFAULT_PORT}.")
    host = match.group(1) or match.group(3) or DEFAULT_HOST
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ConfigError(f"invalid port {port} in {where}: use 1 to 65535.")
    return Address(host, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that could resolve anywhere counts as remote


def parse_duration(value: Any, *, where: str) -> float | None:
    """Seconds for ``30s``, ``5m``, ``1h``, ``90`` (seconds) or ``0``; None (forever) for a negative value."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?", text)
    if not match:
        raise ConfigError(f"invalid duration {value!r} in {where}: use 30s, 5m, 1h, 0 (unload at once) or -1 (forever).")
    number = float(match.group(1))
    if number < 0:
        return None
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


@dataclass(frozen=True)
class ServeSettings:
    address: Address
    api_key: str | None
    keep_alive: float | None  # seconds; None keeps models loaded until stopped
    max_loaded: int | None
    max_memory: int | None  # bytes for all loaded models together; None: what is free
    parallel: int
    max_queue: int
    pull: bool
    preload: tuple[str, ...]
    cors_origins: tuple[str, ...]
    trust_remote_code: bool = False
    allow_pickle: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    max_tokens_cap: int = MAX_TOKENS_CAP

    def __repr__(self) -> str:  # the key is a credential: never in a log or a traceback
        return f"ServeSettings(address={self.address.url}, api_key={'set' if self.api_key else 'not set'}, ...)"


def client_address(config: "Config", environ: Mapping[str, str] | None = None) -> Address:
    """Where `ps`, `stop` and `run` look for the server: MODELMGR_HOST, else the config, else the default."""
    environ = os.environ if environ is None else environ
    if environ.get(HOST_VARIABLE):
        return parse_address(environ[HOST_VARIABLE], where=f"${HOST_VARIABLE}")
    serve = config.serve
    return Address(serve.get("host") or DEFAULT_HOST, serve.get("port") or DEFAULT_PORT)


def client_api_key(config: "Config") -> str | None:
    return config.serve.get("api_key")


def resolve_settings(
    config: "Config",
    *,
    host: str | None = None,
    port: int | None = None,
    api_key: str | None = None,
    keep_alive: str | None = None,
    max_loaded: int | None = None,
    max_memory: int | None = None,
    parallel: int | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Flags beat MODELMGR_HOST, which beats ``[serve]`` in the config, which beats the defaults."""
    environ = os.environ if environ is None else environ
    serve = config.serve
    if host is not None:
        address = parse_address(host, where="--host", default_port=port or serve.get("port") or DEFAULT_PORT)
        if port is not None:
            address = Address(address.host, port)
    else:
        address = client_address(config, environ)
        if port is not None:
            address = Address(address.host, port)
    return ServeSettings(
        address=address,
        api_key=api_key or serve.get("api_key") or None,  # MODELMGR_API_KEY arrives through the config's env layer
        keep_alive=parse_duration(keep_alive if keep_alive is not None else serve.get("keep_alive", "5m"), where="--keep-alive" if keep_alive else "serve.keep_alive"),
        max_loaded=max_loaded or serve.get("max_loaded"),
        max_memory=max_memory or serve.get("max_memory") or config.max_memory,
        parallel=int(parallel or serve.get("parallel") or 8),
        max_queue=int(serve.get("max_queue") or 64),
        pull=bool(serve.get("pull")),
        preload=tuple(serve.get("preload") or ()),
        cors_origins=tuple(serve.get("cors_origins") or ()),
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )


def check_exposure(settings: ServeSettings) -> None:
    """A server that anyone on the network can reach must ask for a key."""
    if not is_loopback(settings.address.host) and not settings.api_key:
        raise ConfigError(
            f"refusing to listen on {settings.address.host}, which other machines can reach, without an API key: "
            f"pass --api-key KEY (or set {KEY_VARIABLE}), or listen on 127.0.0.1."
        )
