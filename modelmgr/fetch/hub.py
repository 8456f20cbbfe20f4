"""The Hub's HTTP protocol: resolve a revision, list a tree, open a file, over an ordered list
of endpoints with fallback.

Metadata requests try each endpoint in turn. A definitive answer ("no such repo") from one
endpoint is remembered but the next is still asked, since a mirror may simply lack the repo;
when every endpoint fails, the error names each one and why.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import quote, urlsplit

from modelmgr import errors
from modelmgr.project.config import Config, Endpoint
from modelmgr.project.names import check_commit, check_etag, check_remote_path, check_size
from modelmgr.fetch.retry import METADATA_TIMEOUTS, AllFailed, DefinitiveAnswer, EndpointFailure, RangeIgnored, Ranking, fall_back
from modelmgr.fetch.transport import Response, Transport
from modelmgr.fetch.auth import classify as classify_access

log = logging.getLogger("modelmgr.fetch.hub")
T = TypeVar("T")
MAX_PAGES = 10_000


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    etag: str  # sha256 for LFS files, git blob sha1 otherwise: the blob's name in the cache
    lfs: bool


def _api_prefix(repo_type: str) -> str:
    return f"/api/{repo_type}s"


def _resolve_prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"/{repo_type}s"


def _quote_revision(revision: str) -> str:
    return quote(revision, safe="")


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    # A hostile or broken server can send "-5" or "nan": time.sleep(-5) raises ValueError and
    # "nan" compares false with every bound. Negative means "now"; nan means "unknown".
    if math.isnan(seconds):
        return 1.0
    return max(0.0, seconds)


def raise_for_status(
    response: Response, *, repo_id: str, revision: str, path: str | None, endpoint: Endpoint, ranged: bool = False,
    repo_type: str = "model",
) -> None:
    """Turn an error status into EndpointFailure (try elsewhere), DefinitiveAnswer (it is not
    there) or RangeIgnored (a range request refused: start the file over without one)."""
    status = response.status
    if status < 400:
        return
    code = response.header("X-Error-Code") or ""
    message = response.headers.get("X-Error-Message")
    try:
        response.read(limit=1024 * 1024)
    except (EndpointFailure, OSError):
        response.close()
    if status == 416 and ranged:
        # The server will not serve the range the resume state asks for (its idea of the file
        # differs, or it refuses ranges): retrying the same range fails the same way forever.
        raise RangeIgnored("refused a byte range (HTTP 416)")
    if status == 429 or status == 503:
        raise EndpointFailure(f"HTTP {status} (rate limited or overloaded)", retry_after=_retry_after(response))
    if status >= 500:
        raise EndpointFailure(f"HTTP {status} server error")
    if code == "RevisionNotFound":
        raise DefinitiveAnswer(errors.RevisionNotFound(
            f"revision {revision!r} not found in {repo_id} on {endpoint.name}: check the branch, tag or commit."))
    if code == "EntryNotFound" and path is not None:
        raise DefinitiveAnswer(errors.EntryNotFound(f"file {path!r} not found in {repo_id}@{revision} on {endpoint.name}."))
    access = classify_access(status, code, message, repo_id=repo_id, repo_type=repo_type, endpoint=endpoint,
                             credential_sent=response.credential_sent, token_withheld=response.token_withheld)
    if access is not None:
        raise DefinitiveAnswer(access, status=status)
    if code in ("RepoNotFound", "EntryNotFound") or status in (401, 403, 404):
        raise DefinitiveAnswer(errors.RepoNotFound(
            f"model {repo_id!r} not found on {endpoint.name} (HTTP {status}): check the id; "
            "for a private repo set HF_TOKEN and allow the endpoint to receive it."))
    raise EndpointFailure(f"HTTP {status}")


def _read_json(response: Response, endpoint: Endpoint) -> object:
    content_type = (response.headers.get("Content-Type") or "").lower()
    body = response.read()
    # Neither answer changes on a retry: move on to the next endpoint at once.
    if "html" in content_type or body.lstrip()[:1] == b"<":
        raise EndpointFailure("answered with an HTML page where JSON was expected (a captive portal or an error page?)", transient=False)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise EndpointFailure("answered with malformed JSON", transient=False) from None


class HubClient:
    def __init__(self, config: Config, *, on_warning: Callable[[str], None] | None = None):
        if config.offline:
            raise errors.OfflineError(
                "offline mode is on (HF_HUB_OFFLINE or --offline) and this needs the network: "
                "pull the model while online, or unset HF_HUB_OFFLINE.")
        self.endpoints = config.endpoints
        self.transport = Transport.for_config(config)
        self._warn = on_warning or (lambda message: log.warning(message))
        # What this pull learns about its endpoints, shared with every download (retry.Ranking).
        self.ranking = Ranking(self.endpoints)
        self._head_first: set[str] = set()  # endpoints whose GET answers lack the Hub's metadata
        self._lock = threading.Lock()

    def ordered(self) -> tuple[Endpoint, ...]:
        """The configured order, with endpoints that already failed in this pull moved last."""
        return tuple(self.ranking.ordered())

    # -- fallback ------------------------------------------------------------------------
    def call(self, what: str, attempt: Callable[[Endpoint], T], *, endpoints: tuple[Endpoint, ...] | None = None) -> tuple[T, Endpoint]:
        """Run ``attempt`` on each endpoint in order until one succeeds (the policy: retry.py)."""
        def leave(endpoint: Endpoint, reason: str) -> None:
            if len(self.endpoints) > 1:
                joined = f"{reason} Trying" if reason.endswith(".") else f"{reason}; trying"
                self._warn(f"{endpoint.name}: {joined} the next endpoint")

        def refused(endpoint: Endpoint, answer: DefinitiveAnswer) -> None:
            if answer.status in (401, 403) and len(self.endpoints) > 1:
                # A refusal may be this endpoint's alone (a mirror without the token):
                # say why the pull moves on rather than falling back silently.
                self._warn(f"{endpoint.name} refused access (HTTP {answer.status}); trying the next endpoint. {answer.error}")

        try:
            return fall_back(endpoints or self.ordered(), attempt, ranking=self.ranking, on_leave=leave, on_answer=refused)
        except AllFailed as failed:
            definitive = failed.definitive()
            if definitive is not None:
                raise definitive from None
            raise errors.HubError(
                f"could not {what} from any endpoint ({failed.detail}). Check your network, or add a mirror with "
                "--endpoint URL or [[hub.endpoints]] in the config.") from None

    def _get_json(self, endpoint: Endpoint, path: str) -> Response:
        # A metadata answer is small: it must be whole within a few read timeouts, however it trickles.
        return self.transport.request(endpoint, "GET", path, headers={"Accept": "application/json"},
                                      whole_within=METADATA_TIMEOUTS * endpoint.timeout)

    # -- protocol ------------------------------------------------------------------------
    def resolve_commit(self, repo_id: str, revision: str, repo_type: str = "model") -> tuple[str, Endpoint]:
        def attempt(endpoint: Endpoint) -> str:
            path = f"{_api_prefix(repo_type)}/{repo_id}/revision/{_quote_revision(revision)}"
            response = self._get_json(endpoint, path)
            raise_for_status(response, repo_id=repo_id, revision=revision, path=None, endpoint=endpoint, repo_type=repo_type)
            data = _read_json(response, endpoint)
            if not isinstance(data, dict):
                raise EndpointFailure("answered a revision request with something that is not an object")
            try:
                return check_commit(data.get("sha"), source=endpoint.name)
            except errors.UnsafeServerResponse as exc:
                raise EndpointFailure(str(exc)) from None

        return self.call(f"resolve {repo_id}@{revision}", attempt)

    def list_files(self, repo_id: str, commit: str, repo_type: str = "model") -> tuple[list[RemoteFile], Endpoint]:
        def attempt(endpoint: Endpoint) -> list[RemoteFile]:
            path: str | None = f"{_api_prefix(repo_type)}/{repo_id}/tree/{commit}?recursive=true&expand=false"
            files: list[RemoteFile] = []
            seen: set[str] = set()
            while path:
                # A cursor that never advances, or pages without end, must not keep the pull here.
                if path in seen:
                    raise EndpointFailure("tree pagination repeats a page it already sent", transient=False)
                if len(seen) >= MAX_PAGES:
                    raise EndpointFailure(f"tree listing did not end after {MAX_PAGES} pages", transient=False)
                seen.add(path)
                response = self._get_json(endpoint, path)
                raise_for_status(response, repo_id=repo_id, revision=commit, path=None, endpoint=endpoint, repo_type=repo_type)
                entries = _read_json(response, endpoint)
                if not isinstance(entries, list):
                    raise EndpointFailure("answered a tree request with something that is not a list")
                files.extend(parse_tree(entries, source=endpoint.name))
                path = _next_page(response, endpoint, page_path=path.split("?", 1)[0])
            return files

        return self.call(f"list the files of {repo_id}@{commit[:8]}", attempt)

    def open_file(
        self,
        endpoint: Endpoint,
        repo_id: str,
        commit: str,
        remote: RemoteFile,
        *,
        start: int = 0,
        end: int | None = None,
        repo_type: str = "model",
    ) -> Response:
        """GET a file (or a byte range of it) at an exact commit, checking the answer is the file.

        Returns a response whose status is 200 (whole file) or 206 (the range asked for).
        """
        path = f"{_resolve_prefix(repo_type)}/{repo_id}/resolve/{commit}/{quote(remote.path)}"
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        # Some mirrors (olah) put the Hub's metadata only on HEAD answers. For those, a HEAD at
        # the same commit vouches for the file first; the bytes are hash-checked either way.
        vouched_by = None
        if endpoint.url in self._head_first:
            vouched_by = self._vouch(endpoint, path, repo_id, commit, remote)
        ranged = "Range" in headers
        response = self.transport.request(endpoint, "GET", path, headers=headers)
        try:
            raise_for_status(response, repo_id=repo_id, revision=commit, path=remote.path, endpoint=endpoint, ranged=ranged, repo_type=repo_type)
            if vouched_by is None and response.header("X-Repo-Commit") is None and _looks_like_file(response, remote):
                response.close()
                vouched_by = self._vouch(endpoint, path, repo_id, commit, remote)
                with self._lock:
                    self._head_first.add(endpoint.url)
                response = self.transport.request(endpoint, "GET", path, headers=headers)
                raise_for_status(response, repo_id=repo_id, revision=commit, path=remote.path, endpoint=endpoint, ranged=ranged, repo_type=repo_type)
            check_file_response(response, remote, commit, start=start, end=end, vouched_by=vouched_by)
        except BaseException:
            response.close()
            raise
        self.transport.use_for_body(response, endpoint)
        return response

    def _vouch(self, endpoint: Endpoint, path: str, repo_id: str, commit: str, remote: RemoteFile) -> Response:
        """HEAD the file: its answer must carry the Hub's metadata for exactly this file."""
        head = self.transport.request(endpoint, "HEAD", path)
        raise_for_status(head, repo_id=repo_id, revision=commit, path=remote.path, endpoint=endpoint)
        if head.header("X-Repo-Commit") is None:
            raise EndpointFailure(f"answered {remote.path} without X-Repo-Commit, on GET and on HEAD: not a Hub-protocol file answer")
        return head


def _looks_like_file(response: Response, remote: RemoteFile) -> bool:
    return response.status in (200, 206) and not _is_html(response, remote)


def _is_html(response: Response, remote: RemoteFile) -> bool:
    return "text/html" in (response.headers.get("Content-Type") or "").lower() and not remote.path.endswith((".html", ".htm"))


def check_file_response(
    response: Response, remote: RemoteFile, commit: str, *, start: int, end: int | None, vouched_by: Response | None = None
) -> None:
    """A file answer must be that file at that commit, not an error page or another version.

    ``vouched_by`` is a HEAD answer for the same file whose metadata stands in for the GET's
    (for mirrors that send it only on HEAD)."""
    if _is_html(response, remote):
        raise EndpointFailure(f"answered {remote.path} with an HTML page (a captive portal or an error page?)")
    metadata = response if vouched_by is None else vouched_by
    served_commit = metadata.header("X-Repo-Commit")
    if served_commit is None:
        raise EndpointFailure(f"answered {remote.path} without X-Repo-Commit: not a Hub-protocol file answer")
    if served_commit != commit:
        raise EndpointFailure(f"served {remote.path} from commit {served_commit[:12]}, not {commit[:12]}")
    etag = (metadata.header("X-Linked-Etag") or metadata.header("ETag") or "").strip().removeprefix("W/").strip('"')
    if etag and etag != remote.etag:
        raise EndpointFailure(f"served {remote.path} with etag {etag[:16]}, expected {remote.etag[:16]}")
    # The Hub's own statement of the file's size (on the answer or on its redirect): a mirror
    # that disagrees with the tree is serving something else.
    linked_size = (metadata.header("X-Linked-Size") or "").strip()
    if linked_size and linked_size != str(remote.size):
        raise EndpointFailure(f"announced X-Linked-Size {linked_size[:20]} for {remote.path}, the tree says {remote.size}")
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        expected = f"bytes {start}-{(end if end is not None else remote.size) - 1}/{remote.size}"
        if content_range.strip() != expected:
            raise EndpointFailure(f"answered a range request for {remote.path} with {content_range!r}, expected {expected!r}")
    elif response.status == 200:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != remote.size:
            raise EndpointFailure(f"announced {length} bytes for {remote.path}, the tree says {remote.size}")
    else:
        raise EndpointFailure(f"answered {remote.path} with unexpected HTTP {response.status}")


def parse_tree(entries: list, *, source: str) -> list[RemoteFile]:
    files = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise errors.UnsafeServerResponse(f"{source} sent a malformed tree entry {entry!r}. Use another endpoint.")
        kind = entry.get("type")
        path = check_remote_path(entry.get("path"), source=source)
        if kind == "directory":
            continue
        if kind != "file":
            raise errors.UnsafeServerResponse(f"{source} sent a tree entry of unknown type {kind!r}. Use another endpoint.")
        lfs = entry.get("lfs")
        if isinstance(lfs, dict):
            etag = check_etag(lfs.get("oid"), source=source, path=path)
            size = check_size(lfs.get("size", entry.get("size")), source=source, path=path)
        else:
            etag = check_etag(entry.get("oid"), source=source, path=path)
            size = check_size(entry.get("size"), source=source, path=path)
        files.append(RemoteFile(path=path, size=size, etag=etag, lfs=isinstance(lfs, dict)))
    return files


def _next_page(response: Response, endpoint: Endpoint, *, page_path: str | None = None) -> str | None:
    link = response.headers.get("Link") or ""
    for part in link.split(","):
        if 'rel="next"' in part and "<" in part and ">" in part:
            url = part[part.index("<") + 1 : part.index(">")]
            if url.startswith("/") and not url.startswith("//"):
                return url
            # Same scheme, host and port only: "https://mirror.example.com.evil.net/" merely
            # starts with the endpoint's URL.
            if url.startswith(endpoint.url + "/") and _origin(url) == _origin(endpoint.url):
                return url[len(endpoint.url):]
            # A mirror that passes the Hub's absolute link through (hf-mirror.com does) means
            # "the next page of this listing": follow it here, on the endpoint being paged, when
            # it names exactly the same API path. Anything else would leave the mirror.
            moved = urlsplit(url)
            endpoint_prefix = urlsplit(endpoint.url).path.rstrip("/")
            if page_path and moved.scheme in ("http", "https") and moved.path in (page_path, endpoint_prefix + page_path):
                return page_path + (f"?{moved.query}" if moved.query else "")
            raise EndpointFailure(f"tree pagination points to another host ({url.split('/')[2] if '://' in url else url})")
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
