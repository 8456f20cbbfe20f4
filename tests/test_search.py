"""`modelmgr search` against the local Hub's /api/models?search=."""
from __future__ import annotations

import json

import pytest

from modelmgr.testing import free_port
from tests.helpers import cli, small_repo


@pytest.fixture
def hub(hub_factory, tmp_path):
    hub = hub_factory()
    folder = small_repo(tmp_path / "r", weights=1000, seed=1)
    hub.add_repo("org/llama-small", folder, downloads=1500, likes=3, library="transformers", pipeline_tag="text-generation")
    hub.add_repo("org/llama-big", folder, downloads=2_500_000, likes=1, library="transformers", pipeline_tag="text-generation")
    hub.add_repo("other/llama-gguf", folder, downloads=90, likes=40, library="gguf", pipeline_tag="text-generation")
    hub.add_repo("org/bert", folder, downloads=10**7, likes=9, library="transformers", pipeline_tag="fill-mask")
    return hub


def test_search_lists_ids_by_downloads(capsys, hub):
    outcome = cli(capsys, "search", "llama", "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    lines = outcome.out.splitlines()
    assert lines[0].split() == ["ID", "DOWNLOADS", "LIKES", "MODIFIED"]
    assert [line.split()[0] for line in lines[1:]] == ["org/llama-big", "org/llama-small", "other/llama-gguf"]
    assert lines[1].split()[1:] == ["2.5M", "1", "2025-01-01"]
    request = [r for r in hub.requests if r.path == "/api/models"][0]
    assert request.params["search"] == ["llama"] and request.params["sort"] == ["downloads"]


def test_search_sorts_filters_limits_and_prints_json(capsys, hub):
    outcome = cli(capsys, "search", "llama", "--sort", "likes", "--library", "transformers", "--limit", "1",
                  "--json", "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    hits = json.loads(outcome.out)
    assert [h["id"] for h in hits] == ["org/llama-small"]
    assert hits[0]["downloads"] == 1500 and hits[0]["likes"] == 3
    tagged = json.loads(cli(capsys, "search", "", "--task", "fill-mask", "--json", "--endpoint", hub.url).out)
    assert [h["id"] for h in tagged] == ["org/bert"]


def test_search_falls_back_to_the_next_endpoint(capsys, hub):
    dead = f"http://127.0.0.1:{free_port()}"
    outcome = cli(capsys, "search", "bert", "--endpoint", dead, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "org/bert" in outcome.out and "refused" in outcome.err


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                  b"<html>portal</html>", b"{not json"])
def test_a_hostile_search_answer_falls_back_to_the_next_endpoint(capsys, hub, hub_factory, body):
    from modelmgr.testing.faults import Status

    hostile = hub_factory()
    hostile.add_fault(Status(200, {"Content-Type": "application/json"}, body), path="/api/models*", times=None)
    outcome = cli(capsys, "search", "bert", "--endpoint", hostile.url, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert "org/bert" in outcome.out
    assert f"{hostile.url}: answered with" in outcome.err and "trying the next endpoint" in outcome.err
    assert "RecursionError" not in outcome.err and "unexpected" not in outcome.err
    assert [r.path for r in hostile.requests].count("/api/models") == 1  # an answer that will not change: no retry


def test_a_hostile_search_answer_from_the_only_endpoint_is_one_line(capsys, hub_factory):
    from modelmgr.testing.faults import Status

    hostile = hub_factory()
    hostile.add_fault(Status(200, {"Content-Type": "application/json"}, b"[" * 100_000), path="/api/models*", times=None)
    outcome = cli(capsys, "search", "bert", "--endpoint", hostile.url)
    assert outcome.code == 1
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1 and "answered with malformed JSON" in lines[0], outcome.err
