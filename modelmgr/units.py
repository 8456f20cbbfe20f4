"""Sizes and durations the way people write them, and back."""
from __future__ import annotations

import re

from modelmgr.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)(B?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """``50G``, ``1.5GB``, ``500MiB`` or plain bytes. ``G`` and ``GiB`` are binary, ``GB`` decimal
    (as disk vendors and the Hub write it)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"invalid size {text!r}: write bytes or a number with a unit, for example 50G, 1.5GB or 500MiB.")
    number, prefix, binary, byte = match.groups()
    prefix = prefix.upper()
    # "50G" and "500MiB" are binary; "1.5GB" (no i, with B) is decimal.
    base = 1000 if (byte and not binary and prefix) else 1024
    return int(float(number) * base ** _POWERS[prefix])


def format_size(num_bytes: int) -> str:
    """Decimal units, as ``hf`` and the Hub show sizes, so the numbers match across tools."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``2w`` -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"invalid duration {text!r}: write a number and a unit (s, m, h, d, w), for example 30d.")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600), (86400 * 60, "d", 86400)):
        if seconds < limit:
            return f"{int(seconds // div)}{unit} ago"
    return f"{int(seconds // (86400 * 30))}mo ago"


def format_count(count: int) -> str:
    """1234567 -> "1.2M", as the Hub's pages show downloads and likes."""
    for threshold, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if count >= threshold:
            value = count / threshold
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(count)
