"""The LocalHub's CDN: a second listener on another port that serves bytes and knows nothing of repos.

huggingface.co answers a weights file with a 302 whose Location is an absolute, signed URL on
another host (us.aws.cdn.hf.co, cas-bridge.xethub.hf.co); the metadata (X-Repo-Commit,
X-Linked-Etag, X-Linked-Size) is on the 302 only. This listener plays that host: a blob is
addressed by its sha256 and an expiry, it honours Range, and it repeats none of the Hub's headers.
Requests are recorded, so tests can show the token never reaches it.
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode


if TYPE_CHECKING:
    from modelmgr.testing.server import HubFile, LocalHub, RecordedRequest

SIGNING_KEY = b"localhub-cdn"  # a stand-in for the CDN's signature: a URL cannot be edited to another blob


class LocalCdn:
    """Bytes by content hash; started and stopped with its LocalHub."""

    def __init__(self, hub: "LocalHub") -> None:
        self._hub = hub
        self._blobs: dict[str, "HubFile"] = {}
        self._lock = threading.Lock()
        self._requests: list["RecordedRequest"] = []
        self._errors: list[str] = []
        # The Hub's own queue: a fault a test puts on "*/model.safetensors" breaks that file's
        # answer wherever the client fetches it, from the Hub directly or on the CDN leg.
        self._faults = hub._faults
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.tls: Any = None  # an ssl.SSLContext to serve https, set before start

    # what the handler reads, shared with LocalHub's

    @property
    def _rate_limit(self) -> int | None:
        return self._hub._rate_limit  # a capped Hub is capped on its CDN too, as a mirror's would be

    def _record(self, request: "RecordedRequest") -> None:
        with self._lock:
            self._requests.append(request)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # for the Hub

    def location(self, hub_file: "HubFile") -> str:
        """The signed URL of a blob, as the Hub's 302 gives it."""
        with self._lock:
            self._blobs[hub_file.etag] = hub_file
        expires = str(int(time.time()) + 3600)
        query = urlencode({"Expires": expires, "Signature": _sign(hub_file.etag, expires),
                           "response-content-disposition": f'attachment; filename="{hub_file.path.rsplit("/", 1)[-1]}"'})
        # The file name ends the path so that a test's fault glob ("*/model.safetensors") can
        # target the CDN leg too (hub.cdn.add_fault).
        return f"{self.url}/blobs/{hub_file.etag}/{hub_file.path.rsplit('/', 1)[-1]}?{query}"

    def blob(self, sha256: str, query: str) -> "HubFile | None":
        params = parse_qs(query)
        expires, signature = params.get("Expires", [""])[0], params.get("Signature", [""])[0]
        if not expires.isdigit() or int(expires) < time.time() or signature != _sign(sha256, expires):
            return None
        with self._lock:
            return self._blobs.get(sha256)

    # tests

    @property
    def requests(self) -> list["RecordedRequest"]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the CDN is not started: start its LocalHub first")
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self._hub.host}:{self._port}"

    def start(self, *, server_class: Any, handler: Any) -> None:
        """Listen with the LocalHub's own server and a handler that serves bytes only (passed in
        by the hub, so this module never imports the one that imports it)."""
        if self._server is not None:
            return
        self._server = server_class((self._hub.host, self._port), self, handler=handler, tls=self.tls)
        self._port = self._server.server_address[1]
        self._thread = self._server.serve_in_thread("LocalCdn")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop_serving(self._thread)


def _sign(sha256: str, expires: str) -> str:
    return hashlib.sha256(SIGNING_KEY + sha256.encode() + expires.encode()).hexdigest()[:32]
