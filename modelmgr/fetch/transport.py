"""HTTP for the Hub protocol on the standard library: kept-alive connections, manual redirects
and a token policy that never lets a credential leave the host it was meant for.

The standard library rather than httpx or requests: it imports in milliseconds, and every
decision that matters here (which header goes where, what a redirect keeps) stays visible.
"""
from __future__ import annotations

import base64
import http.client
import io
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from modelmgr._version import __version__
from modelmgr.project.config import Config, Endpoint, redact_url
from modelmgr.fetch.proxy import Proxy, ProxySettings
from modelmgr.fetch.retry import HEADERS_TIMEOUTS, EndpointFailure, Pace
from modelmgr.fetch.trust import describe_failure, ssl_context

__all__ = ["EndpointFailure", "Response", "Transport", "token_allowed"]

log = logging.getLogger("modelmgr.http")

MAX_REDIRECTS = 5
USER_AGENT = f"modelmgr/{__version__}"
# Headers a Hub puts on the resolve response, which a CDN redirect target does not repeat.
METADATA_HEADERS = ("x-repo-commit", "etag", "x-linked-etag", "x-linked-size", "x-error-code")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    url: str
    metadata: dict[str, str] = field(default_factory=dict)  # from every hop of the redirect chain
    timeout: float = 0.0
    pace: Pace | None = None  # the floor under the body's speed (and its deadline), see retry.Pace
    credential_sent: bool = False  # an Authorization header went with this request
    token_withheld: bool = False  # the user has a token, and this request went without it
    _raw: http.client.HTTPResponse | None = None
    _pool: "_Pool | None" = None
    _key: tuple[str, str, str] | None = None
    _conn: http.client.HTTPConnection | None = None

    def header(self, name: str) -> str | None:
        return self.metadata.get(name.lower()) or self.headers.get(name)

    def set_read_timeout(self, seconds: float) -> None:
        """How long a body read may wait for bytes (HF_HUB_DOWNLOAD_TIMEOUT), once the headers are in."""
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(seconds)
        self.timeout = seconds
        if self.pace is not None:
            self.pace.window = seconds

    def readinto(self, buffer: memoryview) -> int:
        """Read what has arrived (at most one socket read); raises EndpointFailure when the body
        falls below the pace's floor. 0 means the body ended."""
        raw = self._raw
        assert raw is not None
        # At most one socket read, not HTTPResponse.readinto, which waits inside until the whole
        # buffer is full: a server dripping a byte at a time would never give the pace a look.
        fp = raw.fp
        if not raw.chunked and raw.length is not None and isinstance(fp, io.BufferedReader):
            # Straight into the caller's buffer: read1 would cost an allocation and a copy per read.
            count = fp.readinto1(buffer[: raw.length]) if raw.length else 0
            raw.length -= count
            if not count and raw.length:
                raw.close()  # ended early: as read1 does, the caller sees 0 and says so
        else:
            data = raw.read1(len(buffer))
            count = len(data)
            buffer[:count] = data
        if raw.length == 0 and not raw.isclosed():
            raw.read()  # marks the body complete, so the connection is kept for the next request
        if self.pace is not None and count:
            self.pace.feed(count, remaining=raw.length)
        return count

    def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """The whole body, read piece by piece so the pace is checked as it comes: one
        ``HTTPResponse.read(n)`` would wait inside for all ``n`` bytes however slowly they drip."""
        raw = self._raw
        assert raw is not None
        data = bytearray()
        view = memoryview(bytearray(64 * 1024))
        try:
            while True:
                count = self.readinto(view)
                if not count:
                    break
                data += view[:count]
                if len(data) > limit:
                    self.close()
                    raise EndpointFailure(f"answer larger than {limit} bytes")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise EndpointFailure(_describe(exc, urlsplit(self.url).netloc, self.timeout)) from None
        except EndpointFailure:
            self.close()
            raise
        if raw.length:  # read1 takes an early end for the end: what Content-Length promised decides
            self.close()
            raise EndpointFailure(f"answer from {urlsplit(self.url).netloc} ended after {len(data)} bytes, {raw.length} short of its Content-Length")
        self.release()
        return bytes(data)

    def release(self) -> None:
        """Return the connection for reuse once the body has been read to the end."""
        if self._raw is not None and not self._raw.isclosed():
            self.close()  # unread bytes would corrupt the next answer on this connection
        self._raw = None

    def close(self) -> None:
        """Drop the connection (a body left unread cannot be reused)."""
        if self._pool is not None and self._key is not None:
            self._pool.drop(self._key)
        self._raw = None


class _Pool:
    """One kept-alive connection per (thread, host): threads never share a socket."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _conns(self) -> dict:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def get(self, key: tuple[str, str, str], timeout: float, opener) -> tuple[http.client.HTTPConnection, bool]:
        conns = self._conns()
        conn = conns.get(key)
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        conn = conns[key] = opener(timeout)
        return conn, False

    def drop(self, key: tuple[str, str, str]) -> None:
        conn = self._conns().pop(key, None)
        if conn is not None:
            conn.close()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a malformed port (a hostile redirect): an origin nothing matches
        return scheme, (parts.hostname or "").lower(), -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def token_allowed(endpoint: Endpoint, url: str) -> bool:
    """A token goes only to the endpoint's own origin, and only when the user allowed that host.

    The origin is scheme, host and port, as browsers and httpx define it: a redirect to another
    port of the same host is another server (a CDN, a proxy), and https -> http on the same host
    would send the token in clear text.
    """
    origin = _origin(url)
    if origin != _origin(endpoint.url):
        return False
    if endpoint.send_token:
        return True
    return origin == ("https", "huggingface.co", 443)


def basic_auth_allowed(endpoint: Endpoint, url: str) -> bool:
    """A password from the endpoint's URL goes to exactly that origin, never across a redirect."""
    return endpoint.basic_auth is not None and _origin(url) == _origin(endpoint.url)


class Transport:
    def __init__(
        self,
        *,
        token: str | None = None,
        proxies: ProxySettings | None = None,
        ca_bundle: str | None = None,
        metadata_timeout: float | None = None,
        download_timeout: float | None = None,
    ):
        self._token = token
        self._pool = _Pool()
        self.proxies = proxies if proxies is not None else ProxySettings()
        self._ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()
        self.metadata_timeout = metadata_timeout
        self.download_timeout = download_timeout

    @classmethod
    def for_config(cls, config: Config) -> "Transport":
        return cls(token=config.token, proxies=ProxySettings(configured=config.proxy, no_proxy=config.no_proxy),
                   ca_bundle=config.ca_bundle, metadata_timeout=config.metadata_timeout,
                   download_timeout=config.download_timeout)

    def ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:  # built once: loading a CA bundle costs milliseconds
            if self._ssl is None:
                self._ssl = ssl_context(self._ca_bundle)
            return self._ssl

    def use_for_body(self, response: Response, endpoint: Endpoint) -> None:
        """Body reads of a download wait HF_HUB_DOWNLOAD_TIMEOUT (else the endpoint's timeout)."""
        response.set_read_timeout(self.download_timeout or endpoint.timeout)

    def __repr__(self) -> str:  # never show the token, not even in a debugger or a traceback
        return f"Transport(token={'***' if self._token else None})"

    def request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        whole_within: float | None = None,
    ) -> Response:
        """Send one request, following redirects; the body is left for the caller to read.

        Every body has a speed floor (``retry.Pace``); ``whole_within`` seconds, when given, is a
        deadline for the whole answer (metadata, whose size a server cannot be trusted with)."""
        url = endpoint.url + path
        timeout = timeout or self.metadata_timeout or endpoint.timeout
        deadline = time.monotonic() + whole_within if whole_within else None
        metadata: dict[str, str] = {}
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(endpoint, method, url, headers or {}, timeout)
            response.pace = Pace(timeout, deadline=deadline, what=f"the answer from {urlsplit(url).netloc}")
            for name in METADATA_HEADERS:
                value = response.headers.get(name)
                if value is not None:
                    metadata.setdefault(name, value)
            response.metadata = metadata
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                location = urljoin(url, response.headers["Location"])
                if not location.startswith(("http://", "https://")):
                    response.close()
                    raise EndpointFailure(f"redirected to an unsupported location {location!r}")
                self._drain(response)
                log.debug("%s %s -> %d redirect to %s", method, _safe_url(url), response.status, _safe_url(location))
                url = location
                continue
            log.debug("%s %s -> %d", method, _safe_url(url), response.status)
            return response
        raise EndpointFailure(f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _drain(response: Response) -> None:
        try:
            response.read(limit=1024 * 1024)
        except (EndpointFailure, OSError, http.client.HTTPException):
            response.close()

    def _authorization(self, endpoint: Endpoint, url: str) -> str | None:
        if basic_auth_allowed(endpoint, url):
            user, password = endpoint.basic_auth  # type: ignore[misc]
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self._token and token_allowed(endpoint, url):
            return f"Bearer {self._token}"
        return None

    def _opener(self, scheme: str, host: str, port: int, route: str, proxy: Proxy | None):
        def open_connection(timeout: float) -> http.client.HTTPConnection:
            # Through a proxy, the socket goes to the proxy; a tunnel then asks it to CONNECT
            # to the real host, and TLS (with that host's name) runs inside the tunnel.
            to_host, to_port = (host, port) if proxy is None else (proxy.host, proxy.port)
            if scheme == "https":
                conn = http.client.HTTPSConnection(to_host, to_port, timeout=timeout, context=self.ssl_context())
            else:
                conn = http.client.HTTPConnection(to_host, to_port, timeout=timeout)
            if route == "tunnel":
                conn.set_tunnel(host, port, headers=proxy.headers())  # type: ignore[union-attr]
            return conn

        return open_connection

    def _send(self, endpoint: Endpoint, method: str, url: str, headers: dict[str, str], timeout: float) -> Response:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise EndpointFailure(f"redirected to a malformed address {_safe_url(url)!r}") from None
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        send_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        authorization = self._authorization(endpoint, url)
        if authorization:
            send_headers["Authorization"] = authorization
        proxy = self.proxies.for_url(url)
        if proxy is not None and scheme != "https" and authorization:
            # Plain HTTP through a proxy is read by the proxy, whether sent as an absolute URI or
            # inside a CONNECT tunnel (a tunnel to a plain-http server carries the request as it
            # is): a credential must not go that way. Refused before any byte leaves.
            what = "your token" if authorization.startswith("Bearer ") else "the password in its URL"
            raise EndpointFailure(
                f"{endpoint.name} is plain http behind proxy {proxy.netloc} (from {proxy.source}), which would read "
                f"{what} in clear text, so it was not sent: use the endpoint's https:// URL, or exempt {host} in NO_PROXY",
                transient=False)
        # HTTPS always tunnels (TLS runs inside it, end to end); plain HTTP goes as an absolute URI.
        route = "direct" if proxy is None else ("tunnel" if scheme == "https" else "forward")
        if route == "forward":
            target = f"{scheme}://{parts.netloc.rpartition('@')[2]}{target}"  # never a userinfo
            send_headers.update(proxy.headers())  # type: ignore[union-attr]
        key = (scheme, f"{host}:{port}", route)
        netloc = parts.netloc.rpartition("@")[2]
        where = netloc if proxy is None else f"{netloc} through proxy {proxy.netloc} ({proxy.source})"
        for attempt in (1, 2):
            conn, reused = self._pool.get(key, timeout, self._opener(scheme, host, port, route, proxy))
            try:
                conn.request(method, target, headers=send_headers)
                raw = _answer_within(conn, HEADERS_TIMEOUTS * timeout, parts.netloc)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._pool.drop(key)
                if reused and attempt == 1:
                    continue  # a kept-alive socket the server had already closed: not a failure
                raise EndpointFailure(_describe(exc, where, timeout)) from None
            except (OSError, http.client.HTTPException) as exc:
                self._pool.drop(key)
                raise EndpointFailure(_describe(exc, where, timeout, proxy=proxy, host=host)) from None
            except ValueError:
                # http.client refuses a header value with a line break; its message would quote
                # the value, which may be the token: say what happened without it.
                self._pool.drop(key)
                raise EndpointFailure("the request could not be sent: a header value is invalid (check HF_TOKEN)") from None
            if raw.status == 407 and route == "forward":
                raw.read()
                self._pool.drop(key)
                raise EndpointFailure(f"proxy {proxy.netloc} ({proxy.source}) demands a user and password (HTTP 407): "  # type: ignore[union-attr]
                                      "put them in its URL, http://user:password@host:port")
            if method == "HEAD":
                raw.read()
            return Response(raw.status, raw.headers, url, timeout=timeout, credential_sent=authorization is not None,
                            token_withheld=bool(self._token) and authorization is None,
                            _raw=raw, _pool=self._pool, _key=key, _conn=conn)
        raise AssertionError("unreachable")


def _answer_within(conn: http.client.HTTPConnection, seconds: float, netloc: str) -> http.client.HTTPResponse:
    """``conn.getresponse()``, cut off after ``seconds``. The read timeout bounds silence, not a
    status line and headers sent a byte at a time, which http.client would wait for forever."""
    cut = threading.Event()

    def cut_off() -> None:
        cut.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass

    timer = threading.Timer(seconds, cut_off)
    timer.daemon = True
    timer.start()
    try:
        raw = conn.getresponse()
    except (OSError, http.client.HTTPException):
        if not cut.is_set():
            raise
        raw = None
    finally:
        timer.cancel()
    if cut.is_set():
        # (A head cut short can even parse, its end taken for the blank line: never use it.)
        conn.close()
        raise EndpointFailure(f"{netloc} did not send a complete answer head within {seconds:g} s")
    return raw


def _describe(exc: BaseException, netloc: str, timeout: float, *, proxy: Proxy | None = None, host: str = "") -> str:
    if isinstance(exc, ssl.SSLError):
        return describe_failure(exc, host or netloc)
    if proxy is not None and str(exc).startswith("Tunnel connection failed"):
        # http.client's text, e.g. "Tunnel connection failed: 407 Proxy Authentication Required".
        status = str(exc).split(":", 1)[-1].strip()
        fix = "check the user and password in it" if status.startswith("407") else "check that it allows this host"
        return f"proxy {proxy.netloc} ({proxy.source}) refused the tunnel to {host}: {status}; {fix}, or exempt the host in NO_PROXY"
    if proxy is not None and isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return f"cannot reach proxy {proxy.netloc} (from {proxy.source}): check it, or exempt {host} in NO_PROXY"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer from {netloc} within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {netloc} refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {netloc}"
    if isinstance(exc, ConnectionResetError):
        return f"connection to {netloc} reset"
    if isinstance(exc, http.client.HTTPException):
        return f"broken HTTP answer from {netloc} ({type(exc).__name__})"
    return f"{netloc}: {getattr(exc, 'strerror', None) or exc}"


def _safe_url(url: str) -> str:
    """URLs are logged without query strings (signed CDN URLs carry credentials there) and
    without a password in the host part (a redirect may carry one).

    These are URLs as requests go to them, read as ``urlsplit`` reads them (a server's path may
    hold an '@', a file name such as ``icon@2x.png``): the userinfo is in the netloc or nowhere."""
    url = url.split("?", 1)[0].split("#", 1)[0]
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "<unparseable URL>"
    if "@" not in netloc:
        return url
    start = url.index(netloc)
    return url[:start] + redact_url(f"//{netloc}")[2:] + url[start + len(netloc):]
