"""Pytest fixtures over modelmgr.testing; enable with `pytest_plugins = ["modelmgr.testing.fixtures"]`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelmgr.testing import TINY_MODEL_ID
from modelmgr.testing.server import LocalHub
from modelmgr.testing.tinygguf import TINY_GGUF_ID, tiny_gguf_files
from modelmgr.testing.tinymodel import tiny_model_files

if TYPE_CHECKING:
    from modelmgr.testing.proxy import ForwardProxy
    from modelmgr.testing.tls import TestCA


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The seeded tiny model's folder, built once per session. Read-only: copy it to change it."""
    return tiny_model_files()


def _stop_and_check(hub: LocalHub) -> None:
    hub.stop()
    # A server bug would otherwise hide behind whatever the client made of a 500.
    assert not hub.errors, "LocalHub hit internal errors:\n" + "\n".join(hub.errors)


@pytest.fixture
def local_hub(tiny_model_dir: Path) -> Iterator[LocalHub]:
    """A started LocalHub serving the tiny model as TINY_MODEL_ID at main."""
    hub = LocalHub()
    hub.add_repo(TINY_MODEL_ID, tiny_model_dir)
    hub.start()
    try:
        yield hub
    finally:
        _stop_and_check(hub)


@pytest.fixture(scope="session")
def tiny_gguf_dir() -> Path:
    """The tiny model as a GGUF repo folder (F16, Q8_0, Q4_0), built once per session. Read-only."""
    return tiny_gguf_files()


@pytest.fixture
def gguf_hub(tiny_gguf_dir: Path) -> Iterator[LocalHub]:
    """A started LocalHub serving the tiny GGUF repo (several quantizations) as TINY_GGUF_ID."""
    hub = LocalHub()
    hub.add_repo(TINY_GGUF_ID, tiny_gguf_dir)
    hub.start()
    try:
        yield hub
    finally:
        _stop_and_check(hub)


@pytest.fixture
def hub_factory() -> Iterator[Callable[..., LocalHub]]:
    """Make more started hubs (`hub_factory()`, keyword arguments go to LocalHub); all stop at teardown."""
    hubs: list[LocalHub] = []

    def make(**kwargs: object) -> LocalHub:
        hub = LocalHub(**kwargs)  # type: ignore[arg-type]
        hubs.append(hub)
        return hub.start()

    try:
        yield make
    finally:
        for hub in hubs:
            _stop_and_check(hub)


@pytest.fixture
def forward_proxy() -> Iterator["ForwardProxy"]:
    """A started forward proxy on 127.0.0.1 (absolute URIs and CONNECT) whose `log` shows what it saw."""
    from modelmgr.testing.proxy import ForwardProxy

    with ForwardProxy() as proxy:
        yield proxy


@pytest.fixture
def test_ca() -> "TestCA":
    """A CA made for this test, with a certificate for 127.0.0.1 and localhost: `LocalHub(tls=test_ca.server_context())`."""
    from modelmgr.testing.tls import TestCA

    return TestCA("127.0.0.1", "localhost")
