import pytest

from modelmgr.errors import ConfigError
from modelmgr.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [("1024", 1024), (2048, 2048), ("50G", 50 * 1024**3), ("500MiB", 500 * 1024**2), ("1.5GB", 1_500_000_000),
     ("10k", 10 * 1024), ("2 TiB", 2 * 1024**4), ("3kB", 3000)],
)
def test_sizes_as_people_write_them(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "big", "-1G", "1.2.3G", "5X"])
def test_bad_sizes_explain_the_format(text):
    with pytest.raises(ConfigError, match="for example 50G"):
        parse_size(text)


def test_durations_and_formatting():
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    with pytest.raises(ConfigError):
        parse_duration("soon")
    assert format_size(999) == "999 B"
    assert format_size(650361) == "650.4 kB"
    assert format_size(4 * 10**9) == "4.0 GB"
