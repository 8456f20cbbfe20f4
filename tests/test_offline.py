"""Offline (HF_HUB_OFFLINE=1 or --offline): a cached model is served without a single socket;
an uncached one fails with a message that says what to do."""
from __future__ import annotations

import socket

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.cache.manifest import manifest_path

from .helpers import cli, run_modelmgr, hf_cache as cache, small_repo

REPO = "org/offline"


@pytest.fixture
def hub(hub_factory, tmp_path):
    root = small_repo(tmp_path / "repo", weights=100_000, seed=2)
    served = hub_factory()
    served.add_repo(REPO, root)
    return served


class Sockets:
    """Makes every later attempt of this process to connect anywhere fail, and remembers it."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.attempts: list = []

    def block(self) -> None:
        def refuse(sock, address, *args, **kwargs):
            self.attempts.append(address)
            raise AssertionError(f"offline mode opened a connection to {address}")

        self.monkeypatch.setattr(socket.socket, "connect", refuse)
        self.monkeypatch.setattr(socket.socket, "connect_ex", refuse)
        self.monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))


@pytest.fixture
def sockets(monkeypatch) -> Sockets:
    return Sockets(monkeypatch)



def pull_online(capsys, hub) -> None:
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    hub.clear_requests()


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_cached_model_is_served_without_opening_a_socket(capsys, monkeypatch, hub, sockets, how):
    pull_online(capsys, hub)
    sockets.block()
    args = ["pull", REPO, "--endpoint", hub.url]
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        args.append("--offline")
    outcome = cli(capsys, *args)
    assert outcome.code == 0, outcome.err
    assert f"{REPO}@main is in the cache ({hub.commit(REPO)[:8]}); offline, nothing checked." in outcome.out
    assert sockets.attempts == [] and hub.requests == []


@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_uncached_model_fails_clearly_offline(capsys, monkeypatch, hub, sockets, how):
    sockets.block()
    args = ["pull", REPO, "--endpoint", hub.url]
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        args.append("--offline")
    outcome = cli(capsys, *args)
    assert outcome.code == 1
    assert outcome.err == (f"Error: {REPO} is not in the cache and offline mode is on (HF_HUB_OFFLINE or --offline): "
                           "pull it while online, or unset HF_HUB_OFFLINE.\n")
    assert sockets.attempts == [] and hub.requests == []


def test_an_incomplete_snapshot_is_not_served_offline(capsys, monkeypatch, hub, sockets):
    pull_online(capsys, hub)
    paths = RepoPaths(cache(), REPO)
    commit = hub.commit(REPO)
    assert manifest_path(paths, commit).exists()
    (paths.snapshot(commit) / "model.safetensors").unlink()  # as an interrupted pull leaves it
    sockets.block()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 1 and "not in the cache and offline mode is on" in outcome.err
    assert sockets.attempts == [] and hub.requests == []


def test_the_library_api_is_offline_too(capsys, monkeypatch, hub, sockets):
    from modelmgr.project.config import load_config
    from modelmgr.fetch.pull import ensure_snapshot, pull

    pull_online(capsys, hub)
    sockets.block()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    config = load_config()
    assert ensure_snapshot(REPO, config).commit == hub.commit(REPO)
    assert pull(REPO, config=config).snapshot.commit == hub.commit(REPO)
    with pytest.raises(Exception, match="offline mode is on"):
        pull("org/absent", config=config)
    assert sockets.attempts == [] and hub.requests == []


def test_offline_in_a_subprocess_sends_no_request(capsys, hub):
    pull_online(capsys, hub)
    cached = run_modelmgr("pull", REPO, env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.url})
    assert cached.code == 0, cached.err
    missing = run_modelmgr("pull", "org/absent", env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.url})
    assert missing.code == 1 and missing.err.startswith("Error: org/absent is not in the cache and offline mode is on")
    assert hub.requests == []
