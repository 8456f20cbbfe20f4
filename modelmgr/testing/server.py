"""A local Hugging Face Hub: the download protocol huggingface_hub 2.4 speaks, served from folders.

Tests point a client at `LocalHub().url` and get the same endpoints, headers and error codes as
from huggingface.co (see shared/notes/hub-protocol.md), plus faults on demand (faults.py). Only
metadata lives in memory; file bodies stream from disk, so benchmarks can serve large files.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import mimetypes
import os
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from modelmgr.testing.cdn import LocalCdn
from modelmgr.testing.faults import NO_FAULT, Fault, FaultQueue, FaultRule
from modelmgr.testing.search import search_models

# Files git-lfs tracks in a Hub repo by default (.gitattributes of a new repo), whatever their size.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack")
DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024
REPO_TYPES = ("model", "dataset", "space")
_CHUNK = 256 * 1024
# Metadata dates are fixed so that every answer is the same on every run.
_FIXED_DATE = "2025-01-01T00:00:00.000Z"


# --- content identity -------------------------------------------------------------------------

_digest_cache: dict[tuple[str, int, int, str], str] = {}
_digest_lock = threading.Lock()


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content, which the Hub uses as the etag of non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_digest(path: Path, kind: Literal["sha256", "git-sha1"]) -> str:
    # Hashing a 512 MiB benchmark file takes seconds: remember it while the file is unchanged.
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind)
    with _digest_lock:
        if key in _digest_cache:
            return _digest_cache[key]
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % stat.st_size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    with _digest_lock:
        _digest_cache[key] = digest.hexdigest()
    return _digest_cache[key]


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha256.encode(), size)


@dataclass(frozen=True)
class HubFile:
    """One file of a revision: what the Hub says about it and where its bytes come from."""

    path: str
    size: int
    etag: str  # sha256 for LFS files, the git blob sha1 otherwise: the name of the cache's blob
    oid: str  # git blob id in the tree: of the content, or of the LFS pointer for LFS files
    pointer_size: int | None = None  # set for LFS files
    source: Path | None = None
    data: bytes | None = None

    @property
    def is_lfs(self) -> bool:
        return self.pointer_size is not None

    @classmethod
    def from_disk(cls, path: str, source: Path, *, lfs_threshold: int) -> HubFile:
        size = source.stat().st_size
        if not (path.lower().endswith(LFS_SUFFIXES) or size > lfs_threshold):
            blob_id = _file_digest(source, "git-sha1")
            return cls(path, size, blob_id, blob_id, source=source)
        sha256 = _file_digest(source, "sha256")
        pointer = _lfs_pointer(sha256, size)
        return cls(path, size, sha256, git_blob_sha1(pointer), len(pointer), source=source)

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> HubFile:
        return cls(path, len(data), git_blob_sha1(data), git_blob_sha1(data), data=data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else self.source.open("rb")  # type: ignore[union-attr]

    def entry(self) -> dict[str, Any]:
        """The file as /tree lists it."""
        entry: dict[str, Any] = {"type": "file", "path": self.path, "size": self.size, "oid": self.oid}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.etag, "size": self.size, "pointerSize": self.pointer_size}
        return entry


@dataclass(frozen=True)
class Snapshot:
    """One commit of a repo."""

    commit: str
    files: Mapping[str, HubFile]  # by path, sorted
    folders: Mapping[str, str]  # every folder path -> a tree id


def _scan(folder: Path, lfs_threshold: int) -> dict[str, HubFile]:
    files: dict[str, HubFile] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            source = Path(root, name)
            path = source.relative_to(folder).as_posix()
            files[path] = HubFile.from_disk(path, source, lfs_threshold=lfs_threshold)
    return dict(sorted(files.items()))


def _snapshot(repo_id: str, revision: str, files: dict[str, HubFile]) -> Snapshot:
    # Deterministic: the same folder added under the same name gives the same commit on every run.
    commit = hashlib.sha1(f"{repo_id}\n{revision}\n".encode())
    for path, f in files.items():
        commit.update(f"{path}\0{f.etag}\n".encode())
    folders: dict[str, str] = {}
    for path in files:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folders.setdefault("/".join(parts[:depth]), "")
    for folder in folders:
        tree = hashlib.sha1(b"tree\0")
        for path, f in files.items():
            if path.startswith(folder + "/"):
                tree.update(f"{path}\0{f.oid}\n".encode())
        folders[folder] = tree.hexdigest()
    return Snapshot(commit.hexdigest(), files, dict(sorted(folders.items())))


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    tags: set[str] = field(default_factory=set)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)  # commit -> snapshot
    card: dict[str, Any] = field(default_factory=dict)  # downloads, likes, library_name, pipeline_tag

    def resolve(self, revision: str) -> Snapshot | None:
        commit = self.refs.get(revision, revision)
        return self.snapshots.get(commit)

    @property
    def default_branch(self) -> str:
        return "main" if "main" in self.refs else next(iter(self.refs))


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the Hub saw it; `status` is None when it was never answered."""

    method: str
    path: str  # as sent, percent-encoding kept
    query: str
    headers: dict[str, str]  # names lower-cased
    status: int | None
    at: float = 0.0  # time.monotonic() when recorded: orders the Hub's and the CDN's requests

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query)


# --- the Hub ----------------------------------------------------------------------------------


class LocalHub:
    """A Hub on 127.0.0.1 serving folders as repos; `with LocalHub() as hub:` starts and stops it.

    As huggingface.co does, LFS files are answered with a 302 (carrying X-Repo-Commit,
    X-Linked-Etag, X-Linked-Size) to a CDN on another port (`hub.cdn`); `cdn=False` serves them
    directly. A request that a queued fault matches is answered by the Hub itself, so the fault
    breaks the file's answer as the test meant. `tls` (a server-side ssl.SSLContext, for example
    from `modelmgr.testing.tls`) serves https on both listeners.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, cdn: bool = True, tls: Any = None) -> None:
        self.host = host
        self.tls = tls
        self._gated: dict[str, set[str]] = {}  # repo id -> tokens granted access
        self.tree_page_size = 1000
        self._port = port
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._faults = FaultQueue()
        self._rate_limit: int | None = None
        self._tokens: set[str] = set()
        self._private: set[str] | None = set()  # None: every repo is private
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.cdn: LocalCdn | None = LocalCdn(self) if cdn else None
        if self.cdn is not None:
            self.cdn.tls = tls

    # repos

    def add_repo(
        self,
        repo_id: str,
        folder: str | os.PathLike[str],
        *,
        revision: str = "main",
        repo_type: str = "model",
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        tag: bool = False,
        downloads: int = 0,
        likes: int = 0,
        library: str | None = None,
        pipeline_tag: str | None = None,
    ) -> str:
        """Serve `folder` as `revision` (a branch, or a tag) of the repo; returns its commit.

        Adding again under the same revision moves it to the new commit; the old commit stays
        reachable by its id, as on the Hub. Give each revision its own folder: bodies are read from
        disk when requested.
        """
        if repo_type not in REPO_TYPES:
            raise ValueError(f"Unknown repo_type {repo_type!r}. Valid types: {', '.join(REPO_TYPES)}.")
        if not repo_id or any(not part for part in repo_id.split("/")) or repo_id.count("/") > 1:
            raise ValueError(f"Invalid repo id {repo_id!r}: expected 'org/name' or 'name'.")
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"Cannot serve {root}: not a folder.")
        snapshot = _snapshot(repo_id, revision, _scan(root, lfs_threshold))
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), _Repo(repo_type, repo_id))
            # Replaced, never changed in place: handler threads may be iterating the old ones.
            repo.snapshots = {**repo.snapshots, snapshot.commit: snapshot}
            repo.refs = {**repo.refs, revision: snapshot.commit}
            repo.tags = repo.tags | {revision} if tag else repo.tags - {revision}
            repo.card = {"downloads": downloads, "likes": likes, "library_name": library, "pipeline_tag": pipeline_tag}
        return snapshot.commit

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Point a tag at the commit an existing revision resolves to; returns that commit."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            snapshot = repo.resolve(revision)
            if snapshot is None:
                raise ValueError(f"{repo_id} has no revision {revision!r}. Known: {', '.join(repo.refs)}.")
            repo.refs = {**repo.refs, tag: snapshot.commit}
            repo.tags = repo.tags | {tag}
        return snapshot.commit

    def add_repos_from(self, other: LocalHub) -> None:
        """Serve every repo `other` serves (a CDN or mirror for redirect tests)."""
        with other._lock:
            copies = {
                key: _Repo(r.repo_type, r.repo_id, dict(r.refs), set(r.tags), dict(r.snapshots))
                for key, r in other._repos.items()
            }
        with self._lock:
            self._repos.update(copies)

    def commit(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The commit `revision` (a branch, tag or commit) resolves to."""
        return self._snapshot(repo_id, revision, repo_type).commit

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> Mapping[str, HubFile]:
        """The files of a revision by path, with the size and etag the Hub announces for each."""
        return self._snapshot(repo_id, revision, repo_type).files

    def _snapshot(self, repo_id: str, revision: str, repo_type: str) -> Snapshot:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            snapshot = repo.resolve(revision) if repo else None
        if snapshot is None:
            raise KeyError(f"LocalHub serves no {repo_type} {repo_id} at {revision!r}")
        return snapshot

    # behaviour

    def add_fault(
        self, fault: Fault, *, path: str = "*", method: str | None = None, times: int | None = 1
    ) -> FaultRule:
        """Break the next `times` requests (None: all) whose path matches the fnmatch glob `path`."""
        return self._faults.add(fault, path=path, method=method, times=times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_rate_limit(self, bytes_per_second: int | None) -> None:
        """Cap each response body's throughput (None: as fast as the machine goes)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive, or None for no limit")
        self._rate_limit = bytes_per_second

    def require_token(self, token: str, repos: list[str] | None = None) -> None:
        """Make `repos` (None: all) private: only `Authorization: Bearer <token>` reaches them."""
        with self._lock:
            self._tokens.add(token)
            if repos is None:
                self._private = None
            elif self._private is not None:
                self._private.update(repos)

    def add_token(self, token: str) -> None:
        """A token the Hub accepts (for gated repos; `require_token` also makes repos private)."""
        with self._lock:
            self._tokens.add(token)

    def gate(self, repo_id: str, *, granted: tuple[str, ...] = ()) -> None:
        """Make a repo gated, as huggingface.co does: metadata stays public, files need a login
        (401 GatedRepo) and a grant (403 GatedRepo); `granted` tokens have both."""
        with self._lock:
            self._tokens.update(granted)
            self._gated[repo_id] = set(granted)

    # what happened

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
        if self.cdn is not None:
            self.cdn.clear_requests()

    def file_answers(self, name: str | None = None, *, method: str = "GET") -> list[RecordedRequest]:
        """The answers that carried a file's bytes (or refused to), wherever they came from: the
        Hub's own resolve answers other than its CDN redirects, and the CDN's, in time order."""
        def wanted(r: RecordedRequest) -> bool:
            return r.method == method and (name is None or r.path.endswith("/" + name))

        own = [r for r in self.requests if wanted(r) and "/resolve/" in r.path and r.status != 302]
        cdn = [r for r in self.cdn.requests if wanted(r)] if self.cdn is not None else []
        return sorted(own + cdn, key=lambda r: r.at)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of the server's own bugs (never of client disconnects): tests expect none."""
        with self._lock:
            return list(self._errors) + (self.cdn.errors if self.cdn is not None else [])

    # life cycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started: call start() or use it as a context manager.")
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self._port}"

    def start(self) -> LocalHub:
        if self._server is not None:
            return self
        if self.cdn is not None:
            self.cdn.start(server_class=_Server, handler=_CdnHandler)
        self._server = _Server((self.host, self._port), self, tls=self.tls)
        # Remember the port, so a stopped Hub comes back at the same address.
        self._port = self._server.server_address[1]
        self._thread = self._server.serve_in_thread("LocalHub")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop_serving(self._thread)
        if self.cdn is not None:
            self.cdn.stop()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _find_repo(self, repo_type: str, parts: list[str]) -> tuple[_Repo | None, str, list[str]]:
        """Split path parts into a repo (None if unknown), its id and the rest."""
        with self._lock:
            if len(parts) >= 2 and (repo := self._repos.get((repo_type, f"{parts[0]}/{parts[1]}"))):
                return repo, repo.repo_id, parts[2:]
            if parts and (repo := self._repos.get((repo_type, parts[0]))):
                return repo, repo.repo_id, parts[1:]
        return None, "/".join(parts[:2]), parts[2:]

    def _authorized(self, repo_id: str, authorization: str | None) -> bool | None:
        """True: allowed; None: no token sent to a private repo; False: a wrong token."""
        if self._private is not None and repo_id not in self._private:
            return True
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self._tokens


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: Any, *, handler: type | None = None, tls: Any = None) -> None:
        self.hub = hub
        self.tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler or _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake runs on the handler's thread at its first read, never on the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve_in_thread(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
        thread.start()
        return thread

    def stop_serving(self, thread: threading.Thread | None) -> None:
        self.shutdown()
        self.server_close()
        # Keep-alive connections would otherwise keep being served by their threads.
        self.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints to stderr by default; a disconnect is normal, anything else is a bug.
        # A TLS client that distrusts the certificate ends the handshake: that is its answer, not a bug.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            self.hub._record_error(traceback.format_exc())


# --- one request ------------------------------------------------------------------------------


class _Answered(Exception):
    """A fault answered the request: stop the normal answer."""


_API_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_KINDS = {"datasets": "dataset", "spaces": "space"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as every real client uses it
    timeout = 60  # idle keep-alive connections end instead of holding a thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read hub.requests instead

    def version_string(self) -> str:
        return "modelmgr-localhub"

    # Exchange, as faults see it

    @property
    def method(self) -> str:
        return self.command

    @property
    def range_header(self) -> str | None:
        return self.headers.get("Range")

    def reply(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self._send_head(status, {**headers, "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self._send_body(io.BytesIO(body), 0, len(body))

    def write_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def abort(self) -> None:
        """End the connection with a TCP reset."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    # dispatch

    _status: int | None = None

    def handle_one_request(self) -> None:
        self._status = None
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        self.raw_path = self.path
        self.query = parse_qs(split.query)
        self.meta_headers: dict[str, str] = {}
        self._status = None
        self._fault_checked = False
        self._fault = hub._faults.take(self.command, split.path)
        try:
            self._request_body = self._read_request_body()
            self._route(hub, split.path)
        except _Answered:
            pass
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            hub._record_error(traceback.format_exc())
            if self._status is None:
                self._fault, self._fault_checked = NO_FAULT, True
                self._json(500, {"error": "LocalHub internal error (see hub.errors)"})
            else:
                self.close_connection = True
        finally:
            if self._status is None:
                self._remember(None)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _read_request_body(self) -> bytes:
        # Read any body, so the next request on this keep-alive connection starts in the right place.
        length = _int(self.headers.get("Content-Length") or "0")
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, hub: LocalHub, path: str) -> None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3 and parts[1] in _API_KINDS:
            return self._api(hub, _API_KINDS[parts[1]], parts[2:])
        if parts == ["api", "models"] and self.command in ("GET", "HEAD"):
            with hub._lock:
                repos = [r for (kind, _), r in hub._repos.items() if kind == "model"]
            return self._json(200, search_models(repos, self.query))
        if parts[:2] == ["api", "whoami-v2"]:
            return self._whoami(hub)
        if parts[0] != "api":
            repo_type = _URL_KINDS.get(parts[0], "model")
            if repo_type != "model":
                parts = parts[1:]
            for i in (1, 2):  # "name/resolve/..." or "org/name/resolve/..."
                if len(parts) > i + 1 and parts[i] == "resolve":
                    return self._resolve(hub, repo_type, parts[:i], parts[i + 1 :])
        self._error(404, None, f"Not found: {path}")

    def _open_repo(self, hub: LocalHub, repo_type: str, parts: list[str]) -> tuple[_Repo, list[str]]:
        repo, repo_id, rest = hub._find_repo(repo_type, [unquote(p) for p in parts])
        allowed = hub._authorized(repo_id, self.headers.get("Authorization")) if repo else True
        if repo is None or allowed is None:
            # The Hub answers a missing repo and a private one the same way, so as not to leak names.
            self._error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
            raise _Answered
        if allowed is False:
            self._error(401, None, "Invalid credentials in Authorization header")
            raise _Answered
        return repo, parts[len(parts) - len(rest) :]

    def _split_revision(self, repo: _Repo, parts: list[str]) -> tuple[str, Snapshot | None, list[str]]:
        # Clients send the revision percent-encoded ("refs%2Fpr%2F1"); accept it unencoded too.
        for i in range(1, len(parts) + 1):
            revision = unquote("/".join(parts[:i]))
            if (snapshot := repo.resolve(revision)) is not None:
                return revision, snapshot, parts[i:]
        return unquote(parts[0]), None, parts[1:]

    def _snapshot_or_404(self, repo: _Repo, revision: str, snapshot: Snapshot | None) -> Snapshot:
        if snapshot is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            raise _Answered
        return snapshot

    # /api/{kind}s/...

    def _api(self, hub: LocalHub, repo_type: str, parts: list[str]) -> None:
        repo, rest = self._open_repo(hub, repo_type, parts)
        action = rest[0] if rest else ""
        if self.command not in (("POST",) if action == "paths-info" else ("GET", "HEAD")):
            return self._error(405, None, f"Method {self.command} not allowed here")
        if action == "":
            revision = repo.default_branch
            return self._info(hub, repo, self._snapshot_or_404(repo, revision, repo.resolve(revision)))
        if action == "refs":
            return self._refs(repo)
        if action in ("revision", "tree", "paths-info") and len(rest) >= 2:
            revision, snapshot, path_parts = self._split_revision(repo, rest[1:])
            snapshot = self._snapshot_or_404(repo, revision, snapshot)
            if action == "revision":
                return self._info(hub, repo, snapshot)
            if action == "tree":
                return self._tree(hub, repo, snapshot, unquote("/".join(path_parts)))
            return self._paths_info(snapshot)
        self._error(404, None, f"Not found: {self.path}")

    def _files(self, snapshot: Snapshot) -> dict[str, HubFile]:
        extra = {path: HubFile.from_bytes(path, data) for path, data in self._fault.extra_files().items()}
        return {**snapshot.files, **extra}

    def _info(self, hub: LocalHub, repo: _Repo, snapshot: Snapshot) -> None:
        files = self._files(snapshot)
        entries = self._fault.edit_entries([f.entry() for f in files.values()])
        with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": snapshot.commit,
            "lastModified": _FIXED_DATE,
            "createdAt": _FIXED_DATE,
            "private": hub._authorized(repo.repo_id, None) is not True,
            "gated": "manual" if repo.repo_id in hub._gated else False,
            "disabled": False,
            "downloads": repo.card.get("downloads", 0),
            "likes": repo.card.get("likes", 0),
            "tags": [],
            "siblings": [_sibling(e, with_blobs) for e in entries if e["type"] == "file"],
            "usedStorage": sum(f.size for f in files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        self._json(200, info)

    def _refs(self, repo: _Repo) -> None:
        refs: dict[str, list[dict[str, str]]] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        for name, commit in repo.refs.items():
            if name in repo.tags:
                refs["tags"].append({"name": name, "ref": f"refs/tags/{name}", "targetCommit": commit})
            elif name.startswith("refs/pr/"):
                refs["pullRequests"].append({"name": name, "ref": name, "targetCommit": commit})
            else:
                refs["branches"].append({"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit})
        if "include_prs" not in self.query:
            del refs["pullRequests"]
        self._json(200, refs)

    def _tree(self, hub: LocalHub, repo: _Repo, snapshot: Snapshot, folder: str) -> None:
        folder = folder.strip("/")
        if folder and folder not in snapshot.folders:
            # transformers lists optional folders (additional_chat_templates) and expects this.
            self.meta_headers = {"X-Repo-Commit": snapshot.commit}
            return self._error(404, "EntryNotFound", f"{folder} does not exist on {snapshot.commit}")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = f"{folder}/" if folder else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [
            {"type": "directory", "path": path, "size": 0, "oid": oid}
            for path, oid in snapshot.folders.items()
            if listed(path)
        ]
        entries += [f.entry() for path, f in snapshot.files.items() if listed(path)]
        if not folder:  # faults' extra files sit at the top, whatever their names say
            entries += [HubFile.from_bytes(p, d).entry() for p, d in self._fault.extra_files().items()]
        entries.sort(key=lambda e: e["path"])
        if expand:
            last_commit = {"id": snapshot.commit, "title": "Upload folder", "date": _FIXED_DATE}
            entries = [{**e, "lastCommit": last_commit} for e in entries]
        entries = self._fault.edit_entries(entries)

        start = _int(self.query.get("cursor", ["0"])[0])
        page = entries[start : start + hub.tree_page_size]
        headers = {}
        if start + hub.tree_page_size < len(entries):
            params = {k: v[0] for k, v in self.query.items() if k != "cursor"}
            params["cursor"] = str(start + hub.tree_page_size)
            base = f"http://{self.headers.get('Host') or hub.url.split('//', 1)[1]}"
            headers["Link"] = f'<{base}{urlsplit(self.path).path}?{urlencode(params)}>; rel="next"'
        self._json(200, page, headers)

    def _paths_info(self, snapshot: Snapshot) -> None:
        form = parse_qs(self._request_body.decode("utf-8", "replace"))
        wanted = set(form.get("paths", []))
        files = self._files(snapshot)
        entries = [f.entry() for path, f in files.items() if path in wanted]
        entries += [
            {"type": "directory", "path": path, "size": 0, "oid": oid}
            for path, oid in snapshot.folders.items()
            if path in wanted
        ]
        self._json(200, self._fault.edit_entries(sorted(entries, key=lambda e: e["path"])))

    def _whoami(self, hub: LocalHub) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token or (hub._tokens and token.strip() not in hub._tokens):
            return self._error(401, None, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": "localhub-user", "fullname": "LocalHub User", "orgs": []})

    # /{repo}/resolve/{revision}/{path}

    def _resolve(self, hub: LocalHub, repo_type: str, repo_parts: list[str], rest: list[str]) -> None:
        if self.command not in ("GET", "HEAD"):
            return self._error(405, None, f"Method {self.command} not allowed here")
        repo, _ = self._open_repo(hub, repo_type, repo_parts)
        self._check_gate(hub, repo)
        revision, snapshot, path_parts = self._split_revision(repo, rest)
        snapshot = self._snapshot_or_404(repo, revision, snapshot)
        path = unquote("/".join(path_parts))
        self.meta_headers = {"X-Repo-Commit": snapshot.commit}
        hub_file = self._files(snapshot).get(path)
        if hub_file is None:
            # huggingface_hub records the miss under .no_exist/{commit}/ from this answer.
            return self._error(404, "EntryNotFound", f"{path} does not exist on {snapshot.commit}")
        self.meta_headers["ETag"] = f'"{hub_file.etag}"'
        if hub_file.is_lfs:
            self.meta_headers["X-Linked-Etag"] = f'"{hub_file.etag}"'
            self.meta_headers["X-Linked-Size"] = str(hub_file.size)
        if hub_file.is_lfs and hub.cdn is not None and self._fault is NO_FAULT:
            location = hub.cdn.location(hub_file)
            return self.reply(302, {**self.meta_headers, "Location": location, "Content-Type": "text/plain; charset=utf-8"},
                              f"Found. Redirecting to {location}".encode())
        self._serve_file(hub_file, {**self.meta_headers, "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream"})

    def _check_gate(self, hub: LocalHub, repo: _Repo) -> None:
        granted = hub._gated.get(repo.repo_id)
        if granted is None:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        what = f"{repo.repo_type} {repo.repo_id}"
        if not token:
            self._error(401, "GatedRepo", f"Access to {what} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in.")
        elif token not in hub._tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
        elif token not in granted:
            self._error(403, "GatedRepo", f"Access to {what} is restricted and you are not in the authorized list. "
                        f"Visit {hub.url}/{repo.repo_id} to ask for access.")
        else:
            return
        raise _Answered

    def _serve_file(self, hub_file: HubFile, base_headers: Mapping[str, str]) -> None:
        headers = {**base_headers, "Accept-Ranges": "bytes"}
        size = hub_file.size
        span = _parse_range(self.headers.get("Range"), size) if self._fault.honours_range() else None
        if span == "unsatisfiable":
            return self._error(416, None, "Requested range not satisfiable", {"Content-Range": f"bytes */{size}"})
        start, end = span or (0, size - 1)
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        self._send_head(206 if span else 200, headers)
        if self.command == "GET":
            with hub_file.open() as source:
                self._send_body(source, start, end - start + 1)

    # writing answers

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if self._status is None:
            # Recorded before the client can see the answer, so tests never race the server.
            self._remember(code)
        self._status = code

    def _remember(self, status: int | None) -> None:
        # Also reached from send_error() for a malformed request line, before any header was parsed.
        split = urlsplit(getattr(self, "path", "") or "")
        headers = {k.lower(): v for k, v in self.headers.items()} if getattr(self, "headers", None) else {}
        method = getattr(self, "command", None) or ""
        self.server.hub._record(RecordedRequest(method, split.path, split.query, headers, status, time.monotonic()))

    def _send_head(self, status: int, headers: Mapping[str, str]) -> None:
        # Every answer passes here first, so every route gives the request's fault its chance.
        if not self._fault_checked:
            self._fault_checked = True
            if self._fault.intercept(self):
                raise _Answered
        headers = dict(headers)
        self._fault.edit_headers(headers)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_body(self, source: BinaryIO, start: int, length: int) -> None:
        fault, rate = self._fault, self.server.hub._rate_limit
        limit, ending = fault.cut(length) or (length, None)
        if fault is NO_FAULT and rate is None and isinstance(source, io.BufferedReader):
            self.connection.sendfile(source, start, length)  # zero-copy: benchmarks serve big files
        else:
            source.seek(start)
            chunk_size = fault.chunk_size() or (_CHUNK if rate is None else max(1024, min(_CHUNK, rate // 20)))
            sent, began = 0, time.monotonic()
            while sent < limit:
                chunk = source.read(min(chunk_size, limit - sent))
                if not chunk:
                    break  # the file shrank on disk: the client sees a short body
                # Hold each chunk until the cap allows all of it, so no moment ever exceeds the rate.
                if rate is not None and (ahead := (sent + len(chunk)) / rate - (time.monotonic() - began)) > 0:
                    time.sleep(ahead)
                self.wfile.write(fault.edit_chunk(start + sent, chunk))
                sent += len(chunk)
        if ending == "reset":
            self.abort()
        elif ending == "close":
            self.close_connection = True

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.reply(status, {**(headers or {}), "Content-Type": "application/json; charset=utf-8"}, body)

    def _error(
        self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        extra = {**self.meta_headers, **(headers or {}), "X-Error-Message": message}
        if code:
            extra["X-Error-Code"] = code
        self._json(status, {"error": message}, extra)


def _sibling(entry: dict[str, Any], with_blobs: bool) -> dict[str, Any]:
    if not with_blobs:
        return {"rfilename": entry["path"]}
    sibling: dict[str, Any] = {"rfilename": entry["path"], "size": entry["size"], "blobId": entry["oid"]}
    if "lfs" in entry:
        lfs = entry["lfs"]
        sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
    return sibling


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One `bytes=` range as (first, last) inclusive; None means serve the whole body (RFC 9110 14.2)."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    first, dash, last = spec.partition("-")
    if "," in spec or not dash:
        return None  # several ranges, or garbage: a server may answer with the whole body
    try:
        if not first:  # "bytes=-N": the last N bytes
            suffix = int(last)
            return (max(0, size - suffix), size - 1) if suffix > 0 and size > 0 else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)



class _CdnHandler(_Handler):
    """The CDN's answers: a blob by its signed URL, with Range; no repo, no Hub header."""

    def version_string(self) -> str:
        return "modelmgr-localcdn"

    def _route(self, hub: Any, path: str) -> None:
        parts = path.strip("/").split("/")
        if self.command not in ("GET", "HEAD"):
            return self._error(405, None, f"Method {self.command} not allowed here")
        if len(parts) < 2 or parts[0] != "blobs":
            return self._error(404, None, "Not found")
        hub_file = hub.blob(parts[1], urlsplit(self.raw_path).query)
        if hub_file is None:
            return self._error(403, None, "Request has expired or the signature does not match")
        self._serve_file(hub_file, {"ETag": f'"{hub_file.etag}"', "Content-Type": "application/octet-stream"})
