"""The one fallback policy (fetch/retry.py) on its own: how each failure is classified, how many
tries an endpoint gets, what a pull's ranking learns, and the speed floor under a body."""
from __future__ import annotations

import time

import pytest

from modelmgr import errors
from modelmgr.fetch.retry import (
    ATTEMPTS_PER_ENDPOINT, MAX_RETRY_AFTER, MIN_SPEED, PROGRESS_CREDIT, RETRY_PAUSE, AllFailed, DefinitiveAnswer,
    EndpointFailure, Pace, Ranking, fall_back, retry_wait,
)
from modelmgr.project.config import Endpoint

A, B, C = (Endpoint(f"http://{name}.example", name, 1.0) for name in "abc")


def test_the_wait_before_a_retry_here_or_none_for_the_next_endpoint():
    assert retry_wait(EndpointFailure("reset"), 1) == RETRY_PAUSE
    assert retry_wait(EndpointFailure("429", retry_after=3.0), 1) == 3.0
    assert retry_wait(EndpointFailure("429", retry_after=MAX_RETRY_AFTER + 1), 1) is None  # down for this pull
    assert retry_wait(EndpointFailure("an HTML page", transient=False), 1) is None  # will not change on a retry
    assert retry_wait(EndpointFailure("reset"), ATTEMPTS_PER_ENDPOINT) is None


def test_the_ranking_moves_failed_endpoints_last_in_the_order_they_failed_and_skips_bad_bytes():
    ranking = Ranking((A, B, C))
    ranking.demote(B)
    ranking.demote(A)
    assert ranking.ordered() == [C, B, A]
    ranking.served_bad_bytes("e" * 64, [C.url])
    assert ranking.ordered(etag="e" * 64) == [B, A] and ranking.ordered() == [C, B, A]
    assert ranking.all_served_bad_bytes("e" * 64) == []
    ranking.served_bad_bytes("e" * 64, [A.url, B.url])
    assert ranking.all_served_bad_bytes("e" * 64) == [A, B, C]


def test_short_answers_count_as_failures_unless_they_delivered_real_progress():
    delivered = [0]
    calls: list[str] = []

    def attempt(endpoint):
        calls.append(endpoint.name)
        if endpoint is A:
            delivered[0] += 64 * 1024  # a little, then the connection closes
            raise EndpointFailure("connection closed")
        return "ok"

    left: list[str] = []
    result = fall_back([A, B], attempt, ranking=Ranking((A, B)), on_leave=lambda e, r: left.append(e.name),
                       delivered=lambda: delivered[0], pause=lambda s: None)
    assert result == ("ok", B) and calls == ["a"] * ATTEMPTS_PER_ENDPOINT + ["b"] and left == ["a"]

    delivered[0], calls[:] = 0, []
    breaks = iter(range(5))

    def flaky_but_moving(endpoint):
        calls.append(endpoint.name)
        if next(breaks) < 4:
            delivered[0] += PROGRESS_CREDIT  # a long stretch of data before each break
            raise EndpointFailure("reset")
        return "ok"

    assert fall_back([A, B], flaky_but_moving, ranking=Ranking((A, B)), on_leave=lambda e, r: None,
                     delivered=lambda: delivered[0], pause=lambda s: None) == ("ok", A)
    assert calls == ["a"] * 5


def test_every_endpoint_failing_says_what_each_answered_and_definitive_answers_win():
    def attempt(endpoint):
        if endpoint is A:
            raise DefinitiveAnswer(errors.RepoNotFound("not on a"), status=404)
        raise DefinitiveAnswer(errors.RepoNotFound("not on b"))

    heard: list[int | None] = []
    with pytest.raises(AllFailed) as failed:
        fall_back([A, B], attempt, ranking=Ranking((A, B)), on_leave=lambda e, r: None,
                  on_answer=lambda e, answer: heard.append(answer.status), pause=lambda s: None)
    assert str(failed.value.definitive()) == "not on a" and heard == [404, None]
    assert failed.value.detail == "a: not on a; b: not on b"


def test_a_body_slower_than_the_floor_over_a_window_fails_but_a_complete_one_never_does():
    pace = Pace(0.05)
    pace.feed(10, remaining=10_000)
    time.sleep(0.06)
    with pytest.raises(EndpointFailure, match=f"slower than {MIN_SPEED} B/s"):
        pace.feed(10, remaining=9_980)
    finished = Pace(0.05)
    time.sleep(0.06)
    finished.feed(10, remaining=0)  # the last bytes of an answer: nothing left to wait for
    with pytest.raises(EndpointFailure, match="deadline"):
        Pace(10, deadline=time.monotonic() - 1).feed(1, remaining=None)
