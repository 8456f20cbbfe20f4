"""Which proxy a URL goes through, read as curl, requests and httpx read it.

HTTPS_PROXY / https_proxy for https URLs, HTTP_PROXY / http_proxy for http ones, ALL_PROXY /
all_proxy for either; NO_PROXY / no_proxy lists what goes direct. The config's ``[hub] proxy``
replaces the environment's (it is the more deliberate setting); ``[hub] no_proxy`` adds to
NO_PROXY. Lower case wins over upper case, as in requests and curl.

A proxy URL may carry a user and password: they go to the proxy as Proxy-Authorization and are
never printed (``display`` is the redacted form).
"""
from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote, urlsplit

from modelmgr.errors import ConfigError
from modelmgr.project.endpoints import redact_url, split_userinfo


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    source: str  # "HTTPS_PROXY", "[hub] proxy": what the user would change
    display: str  # the URL without its password
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        if self.auth is None:
            return {}
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return {"Proxy-Authorization": f"Basic {token}"}


def parse_proxy(url: str, source: str) -> Proxy:
    """The proxy a URL names. The user and password end at the last '@', as curl reads them, so
    a password pasted without percent-encoding (``p#ss``, ``se/cret``, ``1234/5x``) is still the
    password, never taken for the host or shown in a message."""
    text = url.strip()
    if "://" not in text:
        text = f"http://{text}"  # curl's reading of "proxy.example:3128"
    prefix, userinfo, hostpart = split_userinfo(text)
    shown = redact_url(text)
    try:
        parts = urlsplit(prefix + hostpart)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{source} is not a proxy URL ({shown!r}): use http://[user:password@]host:port.") from None
    if not parts.hostname:
        raise ConfigError(f"{source} is not a proxy URL ({shown!r}): it has no host; use http://[user:password@]host:port.")
    if parts.scheme.lower() != "http":
        # An https:// proxy (TLS to the proxy itself) and SOCKS need more than http.client offers.
        raise ConfigError(f"{source} = {shown!r} is not supported: use an http://host:port proxy "
                          "(HTTPS still goes through it encrypted, in a CONNECT tunnel).")
    auth = None
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        auth = (unquote(user), unquote(password))
    return Proxy(parts.hostname.lower(), port or 80, source, shown, auth)


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for variable in (name.lower(), name.upper()):
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


class ProxySettings:
    """The proxies in force and the hosts exempt from them, resolved once per command."""

    def __init__(self, *, configured: str | None = None, no_proxy: tuple[str, ...] = (),
                 environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        self.by_scheme: dict[str, Proxy] = {}
        if configured:
            proxy = parse_proxy(configured, "[hub] proxy")
            self.by_scheme = {"http": proxy, "https": proxy}
        else:
            fallback = _env(environ, "all_proxy")
            for scheme in ("http", "https"):
                found = _env(environ, f"{scheme}_proxy") or fallback
                if found:
                    self.by_scheme[scheme] = parse_proxy(found[1], found[0])
        listed = _env(environ, "no_proxy")
        entries = [e for e in (listed[1] if listed else "").replace(" ", ",").split(",") if e]
        self.no_proxy: tuple[str, ...] = tuple(e.strip().lower() for e in [*entries, *no_proxy] if e.strip())

    def for_url(self, url: str) -> Proxy | None:
        parts = urlsplit(url)
        proxy = self.by_scheme.get(parts.scheme.lower())
        if proxy is None or bypass(parts.hostname or "", _port(parts), self.no_proxy):
            return None
        return proxy

    def describe(self) -> dict[str, object]:
        """For doctor and config show: what is in force, with passwords redacted."""
        return {
            "http": f"{self.by_scheme['http'].display} (from {self.by_scheme['http'].source})" if "http" in self.by_scheme else None,
            "https": f"{self.by_scheme['https'].display} (from {self.by_scheme['https'].source})" if "https" in self.by_scheme else None,
            "no_proxy": list(self.no_proxy),
        }


def _port(parts) -> int:
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return -1


def bypass(host: str, port: int, entries: tuple[str, ...]) -> bool:
    """True when NO_PROXY exempts host:port (curl's rules, plus ports and CIDR as requests has them)."""
    host = host.lower().strip("[]").rstrip(".")
    address = _ip(host)
    for entry in entries:
        if entry == "*":
            return True
        entry_host, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            if "/" in entry_host:
                try:
                    if address in ipaddress.ip_network(entry_host, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            if _ip(entry_host) == address:
                return True
            continue
        name = entry_host.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    entry = entry.strip()
    if entry.startswith("["):  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
