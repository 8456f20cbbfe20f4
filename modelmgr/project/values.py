"""Parsers for config values: each takes the raw value and the key (for the message) and returns
the checked value or raises ConfigError naming the key and what to write instead."""
from __future__ import annotations

from typing import Any

from modelmgr.errors import ConfigError
from modelmgr.units import parse_size

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"invalid value {value!r} for {key}: use true or false.")


def _as_positive_int(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf in a TOML file
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ConfigError(f"invalid value {value!r} for {key}: use a whole number of at least 1.")
    return number


def _as_seconds(value: Any, key: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf") or isinstance(value, bool):
        raise ConfigError(f"invalid value {value!r} for {key}: use a number of seconds above 0, for example 10.")
    return seconds


def _as_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"invalid value {value!r} for {key}: use a string.")
    return value


def _as_str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"invalid value {value!r} for {key}: use a list of strings.")
    return list(value)


def _as_size(value: Any, key: str) -> int:
    # TOML's `true` is an int to Python, and a size of -5 means nothing: both are mistakes to name.
    if isinstance(value, bool) or not isinstance(value, (int, str)) or isinstance(value, int) and value < 0:
        raise ConfigError(f"invalid value {value!r} for {key}: use a size of 0 or more, for example 50G, 1.5GB or 500MiB.")
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _as_endpoint_list(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) and "url" in v for v in value):
        raise ConfigError(f"invalid value for {key}: use [[hub.endpoints]] tables, each with a url.")
    return value
