"""Hub endpoints: the URL, its settings, and the credentials a URL may carry.

One URL is one endpoint. Where the same URL comes from several layers (``--endpoint``,
HF_ENDPOINT, ``[[hub.endpoints]]``), it keeps the first position but the config table's settings:
the table is the only place send_token, timeout and a name can be written, so ignoring it (as
before) made the documented fix for a token-needing mirror do nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit, urlunsplit

from modelmgr.errors import ConfigError


@dataclass(frozen=True)
class Endpoint:
    url: str  # never holds credentials: they are split off into ``basic_auth``
    name: str
    timeout: float = 30.0
    send_token: bool = False
    # (user, password) from a URL such as http://user:pass@mirror/, sent only to that origin.
    basic_auth: tuple[str, str] | None = field(default=None, repr=False, compare=False)
    source: str = field(default="", compare=False)  # for `config show`: where it and its settings came from

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].split("/", 1)[0].lower()


def split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``scheme://user:pass@host...`` -> ("scheme://", "user:pass", "host..."), the userinfo ending
    at the last '@' as curl reads a URL a user wrote.

    A password is often pasted without percent-encoding; ``urlsplit`` would end the host at its
    first '/', '?' or '#' (``http://bob:1234/5x@proxy:3128`` becomes host ``bob``, port 1234) and
    take the password for a path, a query or a fragment. The last '@' is where a host can begin.
    """
    prefix, sep, rest = url.partition("://")
    if not sep:
        prefix, rest = "", url
    else:
        prefix += sep
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return prefix, None, rest
    return prefix, userinfo, hostpart


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for every message, log and listing."""
    prefix, userinfo, hostpart = split_userinfo(url)
    if userinfo is None:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{prefix}{user}:***@{hostpart}" if colon else f"{prefix}{user}@{hostpart}"


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://u:p@host/x`` -> (``http://host/x``, ("u", "p")). The URL is checked on the way."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"invalid endpoint {redact_url(url)!r}: it must start with http:// or https://.")
    prefix, userinfo, hostpart = split_userinfo(url)
    clean = prefix + hostpart
    try:
        parts = urlsplit(clean)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"invalid endpoint {redact_url(url)!r}: the host or port is malformed.") from None
    if not parts.hostname:
        raise ConfigError(f"invalid endpoint {redact_url(url)!r}: it has no host name.")
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid endpoint {redact_url(url)!r}: drop the query string or fragment.")
    if userinfo is None:
        return clean, None
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), (unquote(user), unquote(password))


def make_endpoint(url: str, *, name: str | None, timeout: float, send_token: bool, source: str) -> Endpoint:
    clean, auth = split_credentials(url)
    if auth is not None and send_token:
        # Both would need the one Authorization header; sending the Hub token in place of the
        # mirror's password (or the reverse) would leak one of them to the wrong party.
        raise ConfigError(f"endpoint {redact_url(url)!r} has a user and password in its URL and send_token = true: "
                          "use one or the other (a request carries one Authorization header).")
    return Endpoint(clean, name or clean, timeout, send_token, auth, source)


def merge_endpoints(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    """One endpoint per URL, at its first position, with the settings of a config table if one names it."""
    merged: dict[str, Endpoint] = {}
    for endpoint in endpoints:
        first = merged.get(endpoint.url)
        if first is None:
            merged[endpoint.url] = endpoint
        elif endpoint.source.startswith("[[hub.endpoints]]") and not first.source.startswith("[[hub.endpoints]]"):
            merged[endpoint.url] = replace(
                endpoint, basic_auth=first.basic_auth or endpoint.basic_auth,
                source=f"{first.source}; settings from {endpoint.source}")
            if merged[endpoint.url].basic_auth and merged[endpoint.url].send_token:
                raise ConfigError(f"endpoint {endpoint.url!r} has a user and password in its URL and send_token = true: "
                                  "use one or the other (a request carries one Authorization header).")
    return tuple(merged.values())
