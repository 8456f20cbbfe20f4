"""The one fallback policy of a pull, for metadata requests and byte ranges alike.

Every failure is one of three kinds:

- a definitive answer (``DefinitiveAnswer``: "no such repo, revision or file", "gated"): this
  endpoint has spoken; the next is still asked, since a mirror may simply lack the repo;
- a failure of this endpoint (``EndpointFailure``): retried here after a pause (the server's
  Retry-After when it sent one) up to ``ATTEMPTS_PER_ENDPOINT`` times, then the endpoint is
  demoted and the next one asked;
- a refused Range (``RangeIgnored``: a 200 with the whole body, or a 416): not a failure of the
  endpoint but of the plan, and the file starts over without ranges.

One ``Ranking`` per pull holds what requests learn about endpoints (which failed, which ignore
Range, which served bytes that did not verify) and gives every request the order to try them in.
Every request also has a floor: a body slower than ``MIN_SPEED`` over a whole read timeout is a
failure (see ``Pace``), so a server that drips bytes cannot keep a pull on it forever.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from modelmgr import errors
from modelmgr.project.config import Endpoint

T = TypeVar("T")

ATTEMPTS_PER_ENDPOINT = 2  # tries of one request on one endpoint before the next is asked
RETRY_PAUSE = 0.2  # seconds between tries when the server did not say how long to wait
MAX_RETRY_AFTER = 30.0  # seconds; a server asking for longer is treated as down
MAX_RESTARTS = 3  # times one file may start over (a resume that did not verify, ignored ranges)
# A broken answer that delivered at least this much was progress over a flaky link, not a failure:
# it does not count against the endpoint. Anything less does, so an endpoint that closes every
# answer early is left after ATTEMPTS_PER_ENDPOINT answers instead of being asked thousands of times.
PROGRESS_CREDIT = 4 * 1024 * 1024
MIN_SPEED = 1024  # bytes per second, over every window of an endpoint's read timeout
METADATA_TIMEOUTS = 4  # a metadata answer must be read whole within this many read timeouts
HEADERS_TIMEOUTS = 2  # every answer's status line and headers must arrive within this many


class EndpointFailure(Exception):
    """This endpoint failed in a way another endpoint may not: try the next one.

    ``retry_after`` is set for 429/503 answers that asked the client to come back later;
    ``transient`` is False for answers that will not change on a retry (an HTML page where JSON
    was expected), which move on to the next endpoint at once.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, transient: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.transient = transient


class DefinitiveAnswer(Exception):
    """An endpoint answered clearly that the thing does not exist (or is not allowed).

    ``status`` is the HTTP status it came with, when a caller needs to tell "no such repo" from
    "not for you" (a mirror without the token may refuse what the next endpoint serves)."""

    def __init__(self, error: errors.HubError, *, status: int | None = None):
        super().__init__(str(error))
        self.error = error
        self.status = status


class RangeIgnored(Exception):
    """The server answered a range request with the whole file, or refused the range (416)."""

    def __init__(self, how: str = "ignored a byte range"):
        super().__init__(how)
        self.how = how


def retry_wait(failure: EndpointFailure, tries: int) -> float | None:
    """Seconds to wait before asking the same endpoint again after ``tries`` failures, or None:
    leave it for the next endpoint."""
    if tries >= ATTEMPTS_PER_ENDPOINT:
        return None
    if failure.retry_after is not None:
        # Asked to come back in an hour: the endpoint is down for this pull.
        return failure.retry_after if failure.retry_after <= MAX_RETRY_AFTER else None
    return RETRY_PAUSE if failure.transient else None


class Pace:
    """The floor under one answer's body: at least ``MIN_SPEED`` bytes a second over every window
    of ``window`` seconds (the endpoint's read timeout), and all of it by ``deadline`` when set.

    The read timeout alone bounds silence, not slowness: a server sending a byte every few
    seconds never trips it. Checked as reads return, so a silent server is still the timeout's.
    """

    def __init__(self, window: float, *, deadline: float | None = None, what: str = "the answer"):
        self.window = max(window, 0.001)
        self.deadline = deadline
        self.what = what
        self.mark_at = time.monotonic()
        self.mark_bytes = 0
        self.total = 0

    def feed(self, count: int, *, remaining: int | None) -> None:
        """Account ``count`` more bytes; ``remaining`` is what the answer still owes (None: unknown)."""
        self.total += count
        if remaining == 0:
            return  # complete: however slow the last stretch, there is nothing left to wait for
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise EndpointFailure(f"{self.what} was not complete after {self.total} bytes and its deadline passed")
        elapsed = now - self.mark_at
        if elapsed >= self.window:
            got = self.total - self.mark_bytes
            if got < MIN_SPEED * elapsed:
                raise EndpointFailure(
                    f"{self.what} came slower than {MIN_SPEED} B/s ({got} bytes in {elapsed:.1f} s)")
            self.mark_at, self.mark_bytes = now, self.total


class Ranking:
    """What this pull has learned about its endpoints, and the order every request tries them in.

    The configured order, except that endpoints which failed move last (in the order they
    failed): a mirror that timed out on the revision would otherwise cost its full timeout again
    for the tree and for every file. They stay in the list, so a file only they have is found.
    """

    def __init__(self, endpoints: Iterable[Endpoint]):
        self.endpoints = tuple(endpoints)
        self._demoted: list[str] = []
        self._no_range: set[str] = set()
        self._bad_bytes: dict[str, set[str]] = {}  # etag -> endpoints whose bytes did not verify
        self._lock = threading.Lock()

    def ordered(self, *, etag: str | None = None) -> list[Endpoint]:
        """Endpoints to try, best first; for a blob, without those that served it corrupt."""
        with self._lock:
            demoted = list(self._demoted)
            skip = set(self._bad_bytes.get(etag, ())) if etag else set()
        healthy = [e for e in self.endpoints if e.url not in demoted and e.url not in skip]
        failed = sorted((e for e in self.endpoints if e.url in demoted and e.url not in skip), key=lambda e: demoted.index(e.url))
        return [*healthy, *failed]

    def demote(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint.url not in self._demoted:
                self._demoted.append(endpoint.url)

    def ignores_range(self, endpoint: Endpoint) -> bool:
        with self._lock:
            return endpoint.url in self._no_range

    def saw_range_ignored(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._no_range.add(endpoint.url)

    def served_bad_bytes(self, etag: str, urls: Iterable[str]) -> None:
        with self._lock:
            self._bad_bytes.setdefault(etag, set()).update(urls)

    def all_served_bad_bytes(self, etag: str) -> list[Endpoint]:
        """The endpoints that served this blob corrupt, or [] while another may still serve it."""
        with self._lock:
            bad = set(self._bad_bytes.get(etag, ()))
        culprits = [e for e in self.endpoints if e.url in bad]
        return culprits if len(culprits) == len(self.endpoints) else []


@dataclass(frozen=True)
class Failure:
    endpoint: Endpoint
    reason: str
    error: errors.HubError | None = None  # set for a definitive answer or a refused listing


class AllFailed(Exception):
    """Every endpoint was asked; ``failures`` says what each answered."""

    def __init__(self, failures: list[Failure]):
        super().__init__("; ".join(f"{f.endpoint.name}: {f.reason}" for f in failures))
        self.failures = failures

    @property
    def detail(self) -> str:
        return str(self)

    def definitive(self) -> errors.HubError | None:
        """The first definitive answer, when every endpoint gave one (so the thing is not there)."""
        if self.failures and all(f.error is not None for f in self.failures):
            return self.failures[0].error
        return None


def fall_back(
    endpoints: Iterable[Endpoint],
    attempt: Callable[[Endpoint], T],
    *,
    ranking: Ranking,
    on_leave: Callable[[Endpoint, str], None],
    on_answer: Callable[[Endpoint, DefinitiveAnswer], None] = lambda endpoint, answer: None,
    delivered: Callable[[], int] = lambda: 0,
    pause: Callable[[float], object] = time.sleep,
    check_stop: Callable[[], None] = lambda: None,
) -> tuple[T, Endpoint]:
    """Run ``attempt`` on each endpoint in turn, retrying each as ``retry_wait`` says, until one
    succeeds; raise ``AllFailed`` when none did.

    ``delivered`` counts what attempts have achieved so far (the bytes of a range): an attempt
    that broke after delivering ``PROGRESS_CREDIT`` or more does not count as a failed try.
    ``on_leave`` hears of every endpoint given up on for a failure of its own (not for a
    definitive answer, which ``on_answer`` hears of). ``RangeIgnored`` and anything unexpected
    pass through to the caller.
    """
    failures: list[Failure] = []
    for endpoint in endpoints:
        tries = 0
        while True:
            check_stop()
            before = delivered()
            try:
                return attempt(endpoint), endpoint
            except DefinitiveAnswer as answer:
                failures.append(Failure(endpoint, str(answer.error), answer.error))
                on_answer(endpoint, answer)
                break
            except errors.UnsafeServerResponse as refused:
                # A hostile or broken listing refuses this endpoint's answer, not the model:
                # another mirror may serve it cleanly. Nothing was written from it.
                failures.append(Failure(endpoint, str(refused), refused))
                ranking.demote(endpoint)
                on_leave(endpoint, str(refused))
                break
            except EndpointFailure as failure:
                tries = 1 if delivered() - before >= PROGRESS_CREDIT else tries + 1
                wait = retry_wait(failure, tries)
                if wait is None:
                    failures.append(Failure(endpoint, failure.reason))
                    ranking.demote(endpoint)
                    on_leave(endpoint, failure.reason)
                    break
                pause(wait)
    raise AllFailed(failures)
