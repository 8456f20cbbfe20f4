import os

import pytest

pytest_plugins = ["modelmgr.testing.fixtures"]


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's caches, config and token, and off the network."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(home / name.lower()))
    config = home / "modelmgr-config.toml"
    config.write_text("")
    monkeypatch.setenv("MODELMGR_CONFIG", str(config))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(home / "xdg_config_dirs"))
    # A project file (modelmgr.toml) is looked for from the working directory up.
    work = home / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in [n for n in os.environ if n.startswith("MODELMGR_") and n != "MODELMGR_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    # `run`, `ps` and `stop` look for a server at MODELMGR_HOST, by default 127.0.0.1:11435, where
    # someone's real server may be running: port 1 has nothing listening.
    monkeypatch.setenv("MODELMGR_HOST", "127.0.0.1:1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    # The legacy spellings too: huggingface_hub still reads them as fallbacks.
    legacy = ("HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH")
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", *legacy):
        monkeypatch.delenv(name, raising=False)
    # A developer's proxy or CA settings would route the loopback servers elsewhere or distrust them;
    # tests that need them set their own.
    network = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
               "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT",
               "HF_HUB_DISABLE_PROGRESS_BARS")
    for name in network:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
