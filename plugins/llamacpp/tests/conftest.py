"""What a plugin's own tests need: modelmgr's test fixtures (a local Hub serving a tiny model)
and the user's real caches and config kept out of reach."""
from __future__ import annotations

import pytest

pytest_plugins = ["modelmgr.testing.fixtures"]


@pytest.fixture(autouse=True)
def isolated_modelmgr(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("MODELMGR_CONFIG", str(home / "config.toml"))
    (home / "config.toml").write_text("")
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "MODELMGR_LOAD_PLUGINS", "MODELMGR_BACKEND"):
        monkeypatch.delenv(name, raising=False)
