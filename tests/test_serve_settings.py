"""The server's settings, addresses and request checks, without a server."""
from __future__ import annotations

import pytest

from modelmgr.errors import ConfigError
from modelmgr.project.config import load_config
from modelmgr.serve.protocol import ApiError, parse_generate, parse_json
from modelmgr.serve.settings import DEFAULT_PORT, check_exposure, is_loopback, parse_address, parse_duration, resolve_settings
from modelmgr.serve.stops import StopScanner


def test_addresses() -> None:
    assert parse_address("0.0.0.0:8080", where="x") == parse_address("http://0.0.0.0:8080/", where="x")
    assert parse_address(":9000", where="x").host == "127.0.0.1"
    assert parse_address("[::1]:9000", where="x").host == "::1"
    assert parse_address("example.org", where="x").port == DEFAULT_PORT
    with pytest.raises(ConfigError, match="use host:port"):
        parse_address("a:b:c", where="$MODELMGR_HOST")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("box.example.org")


def test_durations() -> None:
    assert parse_duration("5m", where="x") == 300 and parse_duration("30s", where="x") == 30 and parse_duration(0, where="x") == 0
    assert parse_duration("-1", where="x") is None and parse_duration("1h", where="x") == 3600
    with pytest.raises(ConfigError, match="30s, 5m, 1h"):
        parse_duration("soon", where="--keep-alive")


def test_flags_beat_the_environment_which_beats_the_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[serve]\nhost = "127.0.0.2"\nport = 9001\nkeep_alive = "1m"\npreload = ["tiny"]\n')
    monkeypatch.setenv("MODELMGR_CONFIG", str(config_file))
    monkeypatch.delenv("MODELMGR_HOST")
    settings = resolve_settings(load_config())
    assert (settings.address.host, settings.address.port, settings.keep_alive, settings.preload) == ("127.0.0.2", 9001, 60, ("tiny",))
    monkeypatch.setenv("MODELMGR_HOST", "127.0.0.3:9002")
    assert resolve_settings(load_config()).address.url == "http://127.0.0.3:9002"
    assert resolve_settings(load_config(), host="127.0.0.4", port=9003).address.url == "http://127.0.0.4:9003"


def test_a_public_address_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        check_exposure(resolve_settings(load_config(), host="0.0.0.0"))
    check_exposure(resolve_settings(load_config(), host="0.0.0.0", api_key="k"))
    monkeypatch.setenv("MODELMGR_API_KEY", "from-env")
    settings = resolve_settings(load_config(), host="0.0.0.0")
    check_exposure(settings)
    assert "from-env" not in repr(settings)


def test_requests_are_checked_field_by_field() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    parsed = parse_generate({**chat, "max_completion_tokens": 5, "stop": "x", "stream": True, "stream_options": {"include_usage": True}},
                            chat=True, max_tokens_cap=100)
    assert (parsed.messages, parsed.max_tokens, parsed.stop, parsed.include_usage) == ([{"role": "user", "content": "hi"}], 5, ("x",), True)
    for bad, param in (({"messages": []}, "messages"), ({"max_tokens": 101}, "max_tokens"), ({"n": 2}, "n"),
                       ({"temperature": "hot"}, "temperature"), ({"model": ""}, "model"), ({"stop": ["a"] * 5}, "stop")):
        with pytest.raises(ApiError) as error:
            parse_generate({**chat, **bad}, chat=True, max_tokens_cap=100)
        assert error.value.status == 400 and error.value.param == param
    with pytest.raises(ApiError, match="not valid JSON"):
        parse_json(b"{")
    assert parse_generate({"model": "m", "prompt": ["once"]}, chat=False, max_tokens_cap=100).prompt == "once"


def test_stop_strings_split_over_pieces() -> None:
    scanner = StopScanner(("<end>",))
    out = [scanner.feed(piece) for piece in ("hello <e", "n", "d> never")]
    assert "".join(out) == "hello " and scanner.stopped
    scanner = StopScanner(("<end>",))
    assert scanner.feed("a <e") == "a " and scanner.feed("x") == "<ex" and not scanner.stopped
