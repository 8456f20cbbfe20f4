"""Ordered endpoints with fallback: refused connections, stalls, 5xx, 429, malformed answers,
a file continued on the next endpoint from the bytes already on disk, one commit for all."""
from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import HostileTree, HtmlPage, ResetMidBody, ShortBody, Stall, Status, free_port

from .helpers import cli, hf_cache as cache

REPO = "org/fallback"
WEIGHTS = 6 * 1024 * 1024  # above download.SMALL_FILE, so a broken transfer keeps its state


def make_repo(root: Path, *, weights: int = WEIGHTS, seed: int = 1, note: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"%s}\n' % note)
    (root / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "model.safetensors").write_bytes(random.Random(seed).randbytes(weights))
    return root


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def two_hubs(hub_factory, repo_dir):
    """Two mirrors serving the same repo: the first is the primary, the second the fallback."""
    first, second = hub_factory(), hub_factory()
    first.add_repo(REPO, repo_dir)
    second.add_repo(REPO, repo_dir)
    return first, second



def write_config(*urls: str, timeout: float | None = None) -> None:
    """Endpoints in order through [[hub.endpoints]] in the config file $MODELMGR_CONFIG."""
    text = f"[hub]\ntimeout = {timeout}\n" if timeout is not None else ""
    for i, url in enumerate(urls):
        text += f'[[hub.endpoints]]\nurl = "{url}"\nname = "mirror{i + 1}"\n'
    Path(os.environ["MODELMGR_CONFIG"]).write_text(text)


def file_gets(hub, name: str | None = None) -> list:
    return hub.file_answers(name)  # from the Hub itself, or from its CDN after a 302


def range_start(request) -> int:
    header = request.headers.get("range")
    return int(header.removeprefix("bytes=").split("-")[0]) if header else 0


def assert_pulled(repo_dir: Path, commit: str) -> None:
    """Every file of the snapshot is a verified blob with the served content."""
    snapshot = RepoPaths(cache(), REPO).snapshot(commit)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        assert (snapshot / name).read_bytes() == (repo_dir / name).read_bytes(), name
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    assert not list(RepoPaths(cache(), REPO).blobs.glob("*.incomplete"))


def timed_requests(monkeypatch, hub) -> list[tuple[float, object]]:
    """(monotonic time, request) as the hub records each answer (a wrapper, the hub is unchanged)."""
    seen: list[tuple[float, object]] = []
    record = hub._record

    def stamped(request):
        seen.append((time.monotonic(), request))
        record(request)

    monkeypatch.setattr(hub, "_record", stamped)
    return seen


# -- connection errors -------------------------------------------------------------------------

def test_refused_first_endpoint_falls_back_to_the_second(capsys, two_hubs, repo_dir):
    _, good = two_hubs
    dead = f"http://127.0.0.1:{free_port()}"
    outcome = cli(capsys, "pull", REPO, "--endpoint", dead, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert "refused" in outcome.err  # the fallback is reported, not silent


def test_when_every_endpoint_is_refused_the_error_names_each(capsys):
    first = f"http://127.0.0.1:{free_port()}"
    second = f"http://127.0.0.1:{free_port()}"
    while second == first:
        second = f"http://127.0.0.1:{free_port()}"
    outcome = cli(capsys, "pull", REPO, "--endpoint", first, "--endpoint", second)
    assert outcome.code == 1
    message = outcome.err.strip().splitlines()[-1]
    assert message.startswith("Error: could not resolve")
    for url in (first, second):
        assert f"{url}: connection to {url.split('//')[1]} refused" in message


def test_every_endpoint_failing_differently_is_each_explained(capsys, two_hubs):
    broken, down = two_hubs
    broken.add_fault(Status(500), times=None)
    down_url = down.url
    down.stop()
    outcome = cli(capsys, "pull", REPO, "--endpoint", broken.url, "--endpoint", down_url)
    assert outcome.code == 1 and outcome.err.count("\n") <= 3
    assert f"{broken.url}: HTTP 500 server error" in outcome.err
    assert f"{down_url}: connection to {down_url.split('//')[1]} refused" in outcome.err


def test_a_file_that_fails_on_every_endpoint_names_each(capsys, two_hubs):
    first, second = two_hubs
    first.add_fault(Status(500), path="*/model.safetensors", times=None)
    second.add_fault(Status(502), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 1
    last = outcome.err.strip().splitlines()[-1]
    assert last.startswith("Error: could not download model.safetensors from any endpoint")
    assert f"{first.url}: HTTP 500" in last and f"{second.url}: HTTP 502" in last
    assert "run the same pull again to resume" in last


# -- timeouts ----------------------------------------------------------------------------------

def test_stalled_endpoint_times_out_and_the_next_serves(capsys, two_hubs, repo_dir):
    stalled, good = two_hubs
    stalled.add_fault(Stall(4), times=None)
    write_config(stalled.url, good.url, timeout=1)
    started = time.monotonic()
    outcome = cli(capsys, "pull", REPO)
    elapsed = time.monotonic() - started
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert "no answer from" in outcome.err and "within 1 s" in outcome.err
    # Two tries of 1 s on the stalled mirror, then it is tried last for the rest of the pull:
    # the timeout is paid once, not again for the tree and for every file.
    assert elapsed < 6, f"took {elapsed:.1f}s"
    assert file_gets(stalled) == []


def test_stall_on_one_file_only_moves_that_file(capsys, two_hubs, repo_dir):
    first, second = two_hubs
    first.add_fault(Stall(4), path="*/model.safetensors", times=None)
    write_config(first.url, second.url, timeout=1)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, first.commit(REPO))
    assert [r.path.rsplit("/", 1)[1] for r in file_gets(second)] == ["model.safetensors"]


# -- server errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [500, 502, 504])
def test_5xx_falls_back(capsys, two_hubs, repo_dir, code):
    broken, good = two_hubs
    broken.add_fault(Status(code), times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", broken.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert f"HTTP {code}" in outcome.err


def test_one_5xx_is_retried_on_the_same_endpoint(capsys, two_hubs, repo_dir):
    first, second = two_hubs
    first.add_fault(Status(500), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    assert [r.status for r in file_gets(first, "model.safetensors")] == [500, 200]
    assert second.requests == []


def test_429_waits_for_retry_after_then_retries_the_same_endpoint(capsys, monkeypatch, two_hubs, repo_dir):
    first, second = two_hubs
    seen = timed_requests(monkeypatch, first)
    first.add_fault(Status(429, {"Retry-After": "1"}), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    tries = [(at, r) for at, r in seen if r.method == "GET" and r.path.endswith("/model.safetensors")]
    # The retry reached the Hub again, which redirected it to its CDN as huggingface.co does.
    assert [r.status for _, r in tries] == [429, 302]
    assert [r.status for r in file_gets(first, "model.safetensors")] == [429, 200]
    assert tries[1][0] - tries[0][0] >= 0.95, "the retry did not wait for Retry-After"
    assert second.requests == [], "a 429 with a short Retry-After is not a reason to leave the endpoint"
    assert_pulled(repo_dir, first.commit(REPO))


def test_429_on_metadata_is_honoured_too(capsys, monkeypatch, two_hubs):
    first, second = two_hubs
    seen = timed_requests(monkeypatch, first)
    first.add_fault(Status(429, {"Retry-After": "1"}), path="*/revision/*")
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    tries = [(at, r) for at, r in seen if "/revision/" in r.path]
    assert [r.status for _, r in tries] == [429, 200]
    assert tries[1][0] - tries[0][0] >= 0.95
    assert second.requests == []


def test_429_asking_for_too_long_moves_on_at_once(capsys, two_hubs, repo_dir):
    first, second = two_hubs
    first.add_fault(Status(429, {"Retry-After": "3600"}), path="*/model.safetensors", times=None)
    started = time.monotonic()
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    assert time.monotonic() - started < 5
    assert len(file_gets(first, "model.safetensors")) == 1, "a server asking for an hour is treated as down"
    assert [r.status for r in file_gets(second, "model.safetensors")] == [200]
    assert_pulled(repo_dir, first.commit(REPO))


@pytest.mark.parametrize("value", ["-5", "soon", "nan"])
def test_malformed_retry_after_never_crashes(capsys, two_hubs, repo_dir, value):
    first, second = two_hubs
    first.add_fault(Status(429, {"Retry-After": value}), path="*/model.safetensors")
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, first.commit(REPO))


# -- malformed answers -------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["*/revision/*", "*/tree/*", "*/model.safetensors", "*/config.json"])
def test_html_page_with_status_200_falls_back(capsys, two_hubs, repo_dir, where):
    portal, good = two_hubs
    portal.add_fault(HtmlPage(), path=where, times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", portal.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "HTML page" in outcome.err
    assert_pulled(repo_dir, good.commit(REPO))


def test_file_answer_without_x_repo_commit_falls_back(capsys, two_hubs, repo_dir):
    proxy, good = two_hubs
    data = (repo_dir / "model.safetensors").read_bytes()
    # The right bytes, but not a Hub-protocol answer: nothing says which commit they are from.
    proxy.add_fault(Status(200, {"Content-Type": "application/octet-stream"}, data), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", proxy.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "without X-Repo-Commit" in outcome.err
    assert [r.status for r in file_gets(good, "model.safetensors")] == [200]


def test_file_answer_of_the_wrong_size_falls_back(capsys, two_hubs, repo_dir):
    liar, good = two_hubs
    commit = liar.commit(REPO)
    etag = hashlib.sha256((repo_dir / "model.safetensors").read_bytes()).hexdigest()
    headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
    liar.add_fault(Status(200, headers, b"\0" * 1000), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", liar.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "announced 1000 bytes" in outcome.err
    assert_pulled(repo_dir, commit)


def test_x_linked_size_disagreeing_with_the_tree_falls_back(capsys, two_hubs, repo_dir):
    from modelmgr.testing import BadSize

    liar, good = two_hubs
    liar.add_fault(BadSize(12345), path="*/resolve/*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", liar.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "12345" in outcome.err
    assert [r.status for r in file_gets(good, "model.safetensors")] == [200]
    assert_pulled(repo_dir, good.commit(REPO))


def test_a_mirror_without_the_repo_is_skipped(capsys, hub_factory, repo_dir):
    empty, full = hub_factory(), hub_factory()
    full.add_repo(REPO, repo_dir)
    outcome = cli(capsys, "pull", REPO, "--endpoint", empty.url, "--endpoint", full.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir, full.commit(REPO))


# -- continuing a file elsewhere, at one commit ----------------------------------------------------

def test_a_file_broken_half_way_continues_on_the_next_endpoint_from_the_bytes_on_disk(capsys, two_hubs, repo_dir):
    first, second = two_hubs
    half = WEIGHTS // 2
    first.add_fault(ShortBody(missing_bytes=WEIGHTS - half), path="*/model.safetensors")
    first.add_fault(Status(500), path="*/model.safetensors", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    (continued,) = file_gets(second, "model.safetensors")
    assert continued.headers["range"] == f"bytes={half}-{WEIGHTS - 1}"
    assert continued.status == 206 and range_start(continued) > 0
    assert_pulled(repo_dir, first.commit(REPO))


def test_the_commit_is_resolved_once_and_every_file_is_fetched_at_it(capsys, two_hubs, repo_dir, tmp_path):
    first, second = two_hubs
    commit = first.commit(REPO)
    # The second mirror has moved on: its main is another commit, the old one is still reachable.
    newer = second.add_repo(REPO, make_repo(tmp_path / "newer", seed=2, note=', "v": 2'))
    assert newer != commit
    first.add_fault(Status(503, {"Retry-After": "0"}), path="*/resolve/*", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", first.url, "--endpoint", second.url)
    assert outcome.code == 0, outcome.err
    revision_calls = [r for hub in two_hubs for r in hub.requests if "/revision/" in r.path]
    tree_calls = [r for hub in two_hubs for r in hub.requests if "/tree/" in r.path]
    assert len(revision_calls) == 1 and len(tree_calls) == 1
    resolves = [r for r in second.requests if r.method == "GET" and "/resolve/" in r.path]
    assert resolves and {r.path.split("/resolve/")[1].split("/")[0] for r in resolves} == {commit}
    assert RepoPaths(cache(), REPO).read_ref("main") == commit
    assert_pulled(repo_dir, commit)


def test_a_connection_reset_inside_a_json_answer_falls_back(capsys, two_hubs, repo_dir):
    broken, good = two_hubs
    broken.add_fault(ResetMidBody(3), path="*/tree/*", times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", broken.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "reset" in outcome.err or "broken" in outcome.err or "closed" in outcome.err
    assert_pulled(repo_dir, good.commit(REPO))


def test_a_hostile_listing_on_one_mirror_falls_back_to_a_clean_one(capsys, two_hubs, repo_dir):
    hostile, good = two_hubs
    hostile.add_fault(HostileTree(paths=("../../escape",)), times=None)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hostile.url, "--endpoint", good.url)
    assert outcome.code == 0, outcome.err
    assert "unsafe file name" in outcome.err and "Trying the next endpoint" in outcome.err
    assert_pulled(repo_dir, good.commit(REPO))
    assert not any("/resolve/" in r.path for r in hostile.requests), "nothing was fetched from the hostile mirror"
