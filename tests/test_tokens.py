"""HF_TOKEN goes to huggingface.co and to endpoints whose config says send_token = true, to
their own origin only: never to another mirror, never across a redirect, never to the screen."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from modelmgr.project.config import Endpoint
from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import RedirectTo, Status, free_port
from modelmgr.fetch.transport import Transport, token_allowed

from .helpers import cli, run_modelmgr, small_repo, serve

REPO = "org/private"
TOKEN = "secret-xyz"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    return small_repo(root, weights=200_000, seed=9)


@pytest.fixture
def hub(hub_factory, repo_dir):
    return serve(hub_factory, REPO, repo_dir)


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def config(*endpoints: tuple[str, bool]) -> None:
    text = ""
    for url, send_token in endpoints:
        text += f'[[hub.endpoints]]\nurl = "{url}"\nsend_token = {"true" if send_token else "false"}\n'
    Path(os.environ["MODELMGR_CONFIG"]).write_text(text)


def authorizations(hub) -> list[str | None]:
    return [r.headers.get("authorization") for r in hub.requests]


def pulled(hub) -> bool:
    snapshot = RepoPaths(Path(os.environ["HF_HUB_CACHE"]), REPO).snapshot(hub.commit(REPO))
    return (snapshot / "model.safetensors").is_file()


def test_a_mirror_from_hf_endpoint_never_gets_the_token(capsys, monkeypatch, hub):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert hub.requests and authorizations(hub) == [None] * len(hub.requests)


def test_an_endpoint_flag_never_gets_the_token(capsys, hub):
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    assert set(authorizations(hub)) == {None}


def test_an_endpoint_configured_with_send_token_gets_it_on_every_request(capsys, hub):
    hub.require_token(TOKEN)
    config((hub.url, True))
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert hub.requests and set(authorizations(hub)) == {f"Bearer {TOKEN}"}
    assert pulled(hub)


def test_a_private_repo_on_a_mirror_without_send_token_says_how_to_fix_it(capsys, hub):
    hub.require_token(TOKEN)
    config((hub.url, False))
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 1
    assert "your token was not sent to it" in outcome.err
    assert f'[[hub.endpoints]] url = "{hub.url}" with send_token = true' in outcome.err
    assert set(authorizations(hub)) == {None}
    assert TOKEN not in outcome.err + outcome.out


def test_the_fallback_endpoint_without_send_token_gets_no_token(capsys, hub):
    dead = f"http://127.0.0.1:{free_port()}"
    config((dead, True), (hub.url, False))
    assert cli(capsys, "pull", REPO).code == 0
    assert set(authorizations(hub)) == {None}


@pytest.mark.parametrize("cdn_host", ["127.0.0.1", "localhost"])
def test_the_token_never_follows_a_redirect_to_another_server(capsys, hub_factory, hub, cdn_host):
    """The CDN is another server: another port of the same address counts, as it does for httpx."""
    cdn = hub_factory(host=cdn_host)
    cdn.add_repos_from(hub)
    hub.require_token(TOKEN)
    hub.add_fault(RedirectTo(cdn.url), path="*/resolve/*", times=None)
    config((hub.url, True))
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert set(authorizations(hub)) == {f"Bearer {TOKEN}"}
    assert len(cdn.requests) == 3 and set(authorizations(cdn)) == {None}
    assert pulled(hub)


def test_the_token_is_never_printed_even_with_debug(hub):
    hub.require_token("another-token")  # so the pull fails with an authorization error
    config((hub.url, True))
    outcome = run_modelmgr("--debug", "pull", REPO, env={"HF_TOKEN": TOKEN})
    assert outcome.code == 1
    assert "Traceback" in outcome.err  # --debug really was on
    assert TOKEN not in outcome.out and TOKEN not in outcome.err
    assert set(authorizations(hub)) == {f"Bearer {TOKEN}"}


def test_the_token_is_never_printed_when_every_endpoint_fails_with_debug(hub):
    hub.add_fault(Status(500), times=None)
    config((hub.url, True), (f"http://127.0.0.1:{free_port()}", True))
    outcome = run_modelmgr("--debug", "pull", REPO, env={"HF_TOKEN": TOKEN, "MODELMGR_DEBUG": "1"})
    assert outcome.code == 1 and "Traceback" in outcome.err
    assert TOKEN not in outcome.out + outcome.err


def test_the_token_stays_out_of_logs_and_reprs(capsys, caplog, hub):
    config((hub.url, True))
    with caplog.at_level(logging.DEBUG, logger="modelmgr"):
        assert cli(capsys, "pull", REPO).code == 0
    assert "GET" in caplog.text and TOKEN not in caplog.text
    assert TOKEN not in repr(Transport(token=TOKEN))
    from modelmgr.project.config import load_config

    loaded = load_config()
    assert loaded.token == TOKEN and TOKEN not in repr(loaded)


@pytest.mark.parametrize(
    "endpoint, url, allowed",
    [
        (Endpoint("https://huggingface.co", "hf"), "https://huggingface.co/api/models/x", True),
        (Endpoint("https://huggingface.co", "hf"), "http://huggingface.co/api/models/x", False),
        (Endpoint("https://huggingface.co", "hf"), "https://cdn-lfs.huggingface.co/x", False),
        (Endpoint("https://huggingface.co", "hf"), "https://huggingface.co:8443/x", False),
        (Endpoint("https://huggingface.co", "hf", send_token=True), "https://huggingface.co:443/x", True),
        (Endpoint("https://mirror.example", "m"), "https://mirror.example/x", False),
        (Endpoint("https://mirror.example", "m", send_token=True), "https://mirror.example/x", True),
        (Endpoint("https://mirror.example", "m", send_token=True), "https://MIRROR.example/x", True),
        (Endpoint("https://mirror.example", "m", send_token=True), "http://mirror.example/x", False),
        (Endpoint("https://mirror.example", "m", send_token=True), "https://mirror.example.evil/x", False),
        (Endpoint("http://127.0.0.1:8000", "m", send_token=True), "http://127.0.0.1:8000/x", True),
        (Endpoint("http://127.0.0.1:8000", "m", send_token=True), "http://127.0.0.1:8001/x", False),
        (Endpoint("http://127.0.0.1", "m", send_token=True), "http://127.0.0.1:80/x", True),
        (Endpoint("http://127.0.0.1", "m", send_token=True), "http://127.0.0.1:bad/x", False),
    ],
)
def test_token_allowed(endpoint, url, allowed):
    assert token_allowed(endpoint, url) is allowed
