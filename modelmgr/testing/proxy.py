"""A real forward proxy on loopback: absolute-URI requests for plain HTTP, CONNECT tunnels for HTTPS.

Tests route modelmgr through it with HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and read its `log` to
see what a proxy sees: each request's method, target and headers. `received` is every byte
clients sent it and `tunnelled` every byte it relayed inside CONNECT tunnels, both ways: what a
real proxy could read, so a test can prove a credential never crossed it (inside a tunnel to an
https server that is TLS; to a plain-http server it is the request in clear text). `resolve`
maps host names only the proxy knows to addresses, so an endpoint can be reachable through the
proxy only; `auth` makes it demand Proxy-Authorization (407 otherwise).
"""
from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str  # "host:port" for CONNECT, the absolute URI otherwise
    headers: dict[str, str]  # names lower-cased
    status: int


class ForwardProxy:
    def __init__(self, *, host: str = "127.0.0.1", resolve: dict[str, str] | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.host = host
        self.resolve = dict(resolve or {})
        self.auth = auth
        self._log: list[ProxyRequest] = []
        self._received = bytearray()
        self._tunnelled = bytearray()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def log(self) -> list[ProxyRequest]:
        with self._lock:
            return list(self._log)

    @property
    def received(self) -> bytes:
        """Every byte clients sent the proxy: request heads, bodies and tunnelled bytes."""
        with self._lock:
            return bytes(self._received)

    @property
    def tunnelled(self) -> bytes:
        """Every byte relayed inside CONNECT tunnels, client to server and back."""
        with self._lock:
            return bytes(self._tunnelled)

    def _from_client(self, data: bytes) -> bytes:
        with self._lock:
            self._received += data
        return data

    @property
    def url(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def url_with_auth(self) -> str:
        assert self.auth is not None
        return f"http://{self.auth[0]}:{self.auth[1]}@{self.url.split('//', 1)[1]}"

    def _record(self, entry: ProxyRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def start(self) -> ForwardProxy:
        proxy = self

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        class Handler(socketserver.StreamRequestHandler):
            timeout = 30

            def handle(self) -> None:
                try:
                    proxy._handle(self.connection, self.rfile)
                except (OSError, ValueError):
                    pass  # a client or upstream that went away: a proxy just drops the connection

        self._server = Server((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ForwardProxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # one client connection: requests until it closes

    def _handle(self, client: socket.socket, rfile) -> None:
        while True:
            line = self._from_client(rfile.readline(65537)).decode("latin-1")
            if not line.strip():
                return
            method, target, _ = line.split(" ", 2)
            raw_headers: list[tuple[str, str]] = []
            while (header := self._from_client(rfile.readline(65537)).decode("latin-1")) not in ("\r\n", "\n", ""):
                name, _, value = header.partition(":")
                raw_headers.append((name.strip(), value.strip()))
            headers = {k.lower(): v for k, v in raw_headers}
            if self.auth is not None and not self._authorized(headers.get("proxy-authorization", "")):
                self._record(ProxyRequest(method, target, headers, 407))
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                               b"Content-Length: 0\r\n\r\n")
                continue
            if method == "CONNECT":
                return self._tunnel(client, rfile, target, headers)
            if not self._forward(client, rfile, method, target, raw_headers, headers):
                return

    def _authorized(self, value: str) -> bool:
        assert self.auth is not None
        expected = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return value == f"Basic {expected}"

    def _connect(self, host: str, port: int) -> socket.socket:
        return socket.create_connection((self.resolve.get(host, host), port), timeout=30)

    def _tunnel(self, client: socket.socket, rfile, target: str, headers: dict[str, str]) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = self._connect(host.strip("[]"), int(port))
        except OSError:
            self._record(ProxyRequest("CONNECT", target, headers, 502))
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self._record(ProxyRequest("CONNECT", target, headers, 200))
        # A client sends nothing more until it reads this line, so nothing sits in rfile's buffer.
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _relay(client, upstream, self._relayed)

    def _relayed(self, data: bytes, from_client: bool) -> None:
        with self._lock:
            self._tunnelled += data
            if from_client:
                self._received += data

    def _forward(self, client, rfile, method, target, raw_headers, headers) -> bool:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._record(ProxyRequest(method, target, headers, 400))
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        length = int(headers.get("content-length", "0") or 0)
        body = self._from_client(rfile.read(length)) if length else b""
        try:
            upstream = self._connect(parts.hostname, parts.port or 80)
        except OSError:
            self._record(ProxyRequest(method, target, headers, 502))
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [(k, v) for k, v in raw_headers if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")]
        head = f"{method} {path or '/'} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "Connection: close\r\n\r\n"
        upstream.sendall(head.encode("latin-1") + body)
        # The answer goes back whole and the connection closes after it: one request per
        # upstream connection keeps this proxy simple, and the client reconnects as with any proxy.
        reply = upstream.makefile("rb")
        status_line = reply.readline()
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        self._record(ProxyRequest(method, target, headers, status))
        out = [status_line]
        while (line := reply.readline()) not in (b"\r\n", b"\n", b""):
            if not line.lower().startswith(b"connection:"):
                out.append(line)
        out.append(b"Connection: close\r\n\r\n")
        client.sendall(b"".join(out))
        while chunk := reply.read1(256 * 1024) if hasattr(reply, "read1") else reply.read(256 * 1024):
            client.sendall(chunk)
        upstream.close()
        return False


def _relay(a: socket.socket, b: socket.socket, seen=lambda data, from_client: None) -> None:
    """Copy bytes both ways until one side closes; ``seen`` hears of each piece (a is the client)."""
    sockets = [a, b]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(256 * 1024)
                if not data:
                    return
                seen(data, sock is a)
                (b if sock is a else a).sendall(data)
    finally:
        b.close()
