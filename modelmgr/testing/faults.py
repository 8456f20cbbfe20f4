"""Ways for the local Hub to misbehave, so tests can prove a client survives a real network.

A fault is a small frozen dataclass; `LocalHub.add_fault(fault, path=glob, method=None, times=1)`
queues it. Each request takes at most one fault: the first queued rule that matches it. A fault
overrides only the hooks of `Fault` for the stage of the answer it breaks, and the server calls
every hook on every request, so a new fault needs no change to the server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, Protocol
from urllib.parse import unquote

# How a truncated body ends: a TCP reset (RST) or an orderly close (FIN) before the declared length.
Ending = Literal["reset", "close"]

# Names a hostile or careless Hub could list; a client must refuse to write any of them.
HOSTILE_PATHS: tuple[str, ...] = ("../../etc/passwd", "/abs", "a\\b", "a\x00b", "C:/x")


class Exchange(Protocol):
    """What a fault sees of the request being answered (implemented by the server's handler)."""

    method: str
    raw_path: str  # path and query exactly as the client sent them
    meta_headers: dict[str, str]  # X-Repo-Commit, ETag, X-Linked-* when the request names a file
    range_header: str | None  # the request's Range header, if any

    def reply(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None: ...

    def abort(self) -> None: ...

    def write_raw(self, data: bytes) -> None:
        """Send bytes as they are, outside any HTTP framing (for faults in the status line or headers)."""


class Fault:
    """Base class: every hook behaves, so a fault overrides only the stage it breaks."""

    def intercept(self, exchange: Exchange) -> bool:
        """Called just before the normal answer starts; True when the fault answered instead."""
        return False

    def edit_headers(self, headers: dict[str, str]) -> None:
        """Change the headers of the answer in place."""

    def edit_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Change a tree listing (also used for revision siblings and paths-info)."""
        return entries

    def extra_files(self) -> Mapping[str, bytes]:
        """Files the Hub pretends the revision holds: listed, and served by /resolve."""
        return {}

    def honours_range(self) -> bool:
        return True

    def cut(self, length: int) -> tuple[int, Ending] | None:
        """Send only this many of the body's `length` bytes, then end the connection so."""
        return None

    def edit_chunk(self, offset: int, chunk: bytes) -> bytes:
        """Change body bytes; `offset` is where `chunk` starts in the whole file."""
        return chunk

    def chunk_size(self) -> int | None:
        """Send the body in pieces of this many bytes (None: the server's own size)."""
        return None


NO_FAULT = Fault()


@dataclass(frozen=True)
class ResetMidBody(Fault):
    """Send the headers and `after_bytes` of the body, then reset the TCP connection."""

    after_bytes: int = 0

    def cut(self, length: int) -> tuple[int, Ending]:
        return min(self.after_bytes, length), "reset"


@dataclass(frozen=True)
class ShortBody(Fault):
    """Declare the full Content-Length but close cleanly `missing_bytes` before the end."""

    missing_bytes: int = 1

    def cut(self, length: int) -> tuple[int, Ending]:
        return max(0, length - self.missing_bytes), "close"


@dataclass(frozen=True)
class CloseAfter(Fault):
    """Declare the full Content-Length but close cleanly after `after_bytes` of every body."""

    after_bytes: int = 0

    def cut(self, length: int) -> tuple[int, Ending]:
        return min(self.after_bytes, length), "close"


@dataclass(frozen=True)
class Drip(Fault):
    """Send the body `step` bytes at a time, one piece every `interval` seconds: never silent for
    long enough to trip a read timeout, never fast enough to finish."""

    interval: float = 2.0
    step: int = 1

    def chunk_size(self) -> int:
        return self.step

    def edit_chunk(self, offset: int, chunk: bytes) -> bytes:
        time.sleep(self.interval)
        return chunk


@dataclass(frozen=True)
class DripHeaders(Fault):
    """Send the status line, then one header line every `interval` seconds for `seconds`, never
    ending the head: every read returns something, so no read timeout ever fires."""

    interval: float = 0.2
    seconds: float = 60.0

    def intercept(self, exchange: Exchange) -> bool:
        try:
            exchange.write_raw(b"HTTP/1.1 200 OK\r\n")
            ends = time.monotonic() + self.seconds
            while time.monotonic() < ends:
                time.sleep(self.interval)
                exchange.write_raw(b"X-Drip: 1\r\n")
        except OSError:
            pass  # the client gave up: that is the point
        exchange.abort()
        return True


@dataclass(frozen=True)
class RefuseRange(Fault):
    """Answer every request that carries a Range header with 416 Range Not Satisfiable."""

    def intercept(self, exchange: Exchange) -> bool:
        if exchange.range_header is None:
            return False
        exchange.reply(416, {"Content-Type": "text/plain"}, b"Requested range not satisfiable")
        return True


@dataclass(frozen=True)
class Status(Fault):
    """Answer with this status instead, e.g. 500, 503, or 429 with {"Retry-After": "1"}."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def hub_error(cls, code: int, error_code: str, message: str = "") -> Status:
        """An error the way the Hub signals it, e.g. hub_error(401, "GatedRepo")."""
        message = message or error_code
        headers = {"X-Error-Code": error_code, "X-Error-Message": message, "Content-Type": "application/json"}
        return cls(code, headers, json.dumps({"error": message}).encode())

    def intercept(self, exchange: Exchange) -> bool:
        exchange.reply(self.code, self.headers, self.body)
        return True


@dataclass(frozen=True)
class Stall(Fault):
    """Wait before answering, so a client's timeout fires first."""

    seconds: float

    def intercept(self, exchange: Exchange) -> bool:
        time.sleep(self.seconds)
        return False


@dataclass(frozen=True)
class FlipByte(Fault):
    """Serve the body with the byte at `offset` of the whole file XOR 0xFF: silent corruption."""

    offset: int = 0

    def edit_chunk(self, offset: int, chunk: bytes) -> bytes:
        i = self.offset - offset
        if 0 <= i < len(chunk):
            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        return chunk


@dataclass(frozen=True)
class HtmlPage(Fault):
    """Answer 200 with an HTML page, as a captive portal or a misconfigured proxy does."""

    status: int = 200
    html: str = (
        "<!DOCTYPE html><html><head><title>Sign in</title></head>"
        "<body>Please log in to the network.</body></html>"
    )

    def intercept(self, exchange: Exchange) -> bool:
        exchange.reply(self.status, {"Content-Type": "text/html; charset=utf-8"}, self.html.encode())
        return True


@dataclass(frozen=True)
class RedirectTo(Fault):
    """Redirect to `url_prefix` + the request's path, keeping the file metadata on the 3xx.

    The Hub's CDN redirects carry X-Repo-Commit, ETag and X-Linked-* on the redirect itself, and
    huggingface_hub reads them there. The target is usually a second LocalHub that serves the same
    repos (`LocalHub.add_repos_from`), whose `requests` show which headers reached it.
    """

    url_prefix: str
    status: int = 302

    def intercept(self, exchange: Exchange) -> bool:
        location = self.url_prefix.rstrip("/") + exchange.raw_path
        exchange.reply(self.status, {**exchange.meta_headers, "Location": location})
        return True


@dataclass(frozen=True)
class IgnoreRange(Fault):
    """Answer a Range request with 200 and the whole body, as some proxies and CDNs do."""

    def honours_range(self) -> bool:
        return False


@dataclass(frozen=True)
class HostileTree(Fault):
    """List files with hostile names (path traversal, absolute, NUL...) and serve them too.

    Listings and revision siblings both show them, so use times=None (or a path glob) to cover
    every request a client makes.
    """

    paths: tuple[str, ...] = HOSTILE_PATHS
    content: bytes = b"hostile\n"

    def extra_files(self) -> Mapping[str, bytes]:
        return {path: self.content for path in self.paths}


@dataclass(frozen=True)
class BadEtag(Fault):
    """Serve `etag` as the ETag/X-Linked-Etag and as the tree's oid of files matching `files`.

    An etag names a blob in the cache, so values like "../../x" test path handling as well.
    """

    etag: str
    files: str = "*"

    def edit_headers(self, headers: dict[str, str]) -> None:
        for name in ("ETag", "X-Linked-Etag"):
            if name in headers:
                headers[name] = f'"{self.etag}"'

    def edit_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if entry["type"] == "file" and fnmatchcase(entry["path"], self.files):
                if "lfs" in entry:
                    entry["lfs"] = {**entry["lfs"], "oid": self.etag}
                else:
                    entry["oid"] = self.etag
        return entries


@dataclass(frozen=True)
class BadSize(Fault):
    """Announce a wrong size (X-Linked-Size and tree sizes) while serving the real bytes."""

    size: int

    def edit_headers(self, headers: dict[str, str]) -> None:
        if "X-Linked-Size" in headers:
            headers["X-Linked-Size"] = str(self.size)

    def edit_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if entry["type"] == "file":
                entry["size"] = self.size
                if "lfs" in entry:
                    entry["lfs"] = {**entry["lfs"], "size": self.size}
        return entries


@dataclass(frozen=True)
class PauseMidBody(Fault):
    """Send the first `after_bytes` of the body, go silent for `seconds`, then send the rest:
    a stalled transfer, which a client's body-read timeout must catch (or wait out)."""

    after_bytes: int
    seconds: float
    _paused: list = field(default_factory=list, compare=False, repr=False)

    def edit_chunk(self, offset: int, chunk: bytes) -> bytes:
        if offset >= self.after_bytes and not self._paused:
            self._paused.append(True)
            time.sleep(self.seconds)
        return chunk


@dataclass(frozen=True)
class RewriteLink(Fault):
    """Put another origin (and optionally another path) in a tree page's `Link: rel="next"`, keeping
    the cursor: what hf-mirror.com does when it passes huggingface.co's absolute link through."""

    origin: str
    path: str | None = None

    def edit_headers(self, headers: dict[str, str]) -> None:
        link = headers.get("Link")
        if not link or "<" not in link:
            return
        url = link[link.index("<") + 1 : link.index(">")]
        rest = url.split("://", 1)[-1]
        path_and_query = rest[rest.index("/"):] if "/" in rest else "/"
        if self.path is not None:
            query = path_and_query.partition("?")[2]
            path_and_query = self.path + (f"?{query}" if query else "")
        headers["Link"] = f"<{self.origin.rstrip('/')}{path_and_query}>" + link[link.index(">") + 1 :]


@dataclass(frozen=True)
class Hangup(Fault):
    """Drop the connection without any answer, as a crashing server or proxy does."""

    def intercept(self, exchange: Exchange) -> bool:
        exchange.abort()
        return True


def free_port() -> int:
    """A local port with nothing listening: connecting to it is refused (a Hub that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class FaultRule:
    """One queued fault; `hits` counts the requests it has broken."""

    fault: Fault
    path: str = "*"
    method: str | None = None
    times: int | None = 1  # None: forever
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        # Match the path as sent and decoded, so globs can name files with spaces or revisions with "/".
        return fnmatchcase(path, self.path) or fnmatchcase(unquote(path), self.path)


class FaultQueue:
    """Thread-safe rules, consumed in the order they were added."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault, *, path: str = "*", method: str | None = None, times: int | None = 1) -> FaultRule:
        if times is not None and times < 1:
            raise ValueError(f"times must be a positive number or None (forever), not {times}")
        rule = FaultRule(fault, path, method, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> Fault:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule.fault
        return NO_FAULT

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
