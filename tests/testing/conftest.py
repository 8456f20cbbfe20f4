"""Helpers for the modelmgr.testing tests: a plain HTTP client and a small synthetic repo."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from modelmgr.testing import LocalHub

SMALL_REPO = "org/small"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None,
           timeout: float = 10) -> Reply:
    """One request on a fresh connection; never follows redirects, so tests see what the Hub said."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


@pytest.fixture
def fetch() -> Callable[..., Reply]:
    return _fetch


def write_small_repo(root: Path) -> Path:
    """A repo with a git file, an LFS file, a nested folder and a large non-weight file."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}\n')
    (root / "README.md").write_text("# small\n")
    (root / "model.safetensors").write_bytes(os.urandom(100_000))
    (root / "sub" / "notes.txt").write_text("hello notes\n")
    (root / "sub" / "deeper" / "data.txt").write_bytes(b"x" * 3000)
    return root


@pytest.fixture
def small_repo_dir(tmp_path: Path) -> Path:
    return write_small_repo(tmp_path / "small")


@pytest.fixture
def hub(small_repo_dir: Path) -> Iterator[LocalHub]:
    """A started LocalHub serving the small repo as org/small at main, with a 2 KB LFS threshold.

    It serves LFS files itself (cdn=False): these tests check the Hub's own file answers (ranges,
    416, rate caps, faults); test_localhub_cdn.py checks the default 302-to-CDN path."""
    with LocalHub(cdn=False) as local:
        local.add_repo(SMALL_REPO, small_repo_dir, lfs_threshold=2048)
        yield local
        assert not local.errors, "\n".join(local.errors)
