"""How a pull splits its files into ranges: the pull's bytes spread over its connections in about
one wave, so files of tens of MB use several connections and big pulls keep big parts."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from modelmgr.cache.layout import RepoPaths
from modelmgr.fetch.parts import MIN_PART, SPREAD_PART, part_size, split

from .helpers import cli, hf_cache as cache, serve

MiB = 1024 * 1024
REPO = "org/parts"


def test_a_pull_of_tens_of_mb_is_split_to_fill_its_connections():
    assert part_size(200_000_000, 32) == max(MIN_PART, 6_250_000)  # one wave, or the floor
    assert part_size(600_000_000, 32) == 18_750_000  # one wave: each connection one part
    assert part_size(4 * 512 * MiB, 32) == SPREAD_PART  # gigabytes: parts as big as they ever were
    assert part_size(0, 32) == MIN_PART


def test_split_keeps_the_prefix_and_tiles_the_file():
    parts = split(50 * MiB + 3, 5 * MiB, 32, MIN_PART)
    assert parts[0].start == 0 and parts[0].end == 5 * MiB and parts[0].complete
    assert all(a.end == b.start for a, b in zip(parts, parts[1:])) and parts[-1].end == 50 * MiB + 3
    assert len(parts) == 1 + (45 * MiB + 3) // MIN_PART


def test_a_file_of_a_few_tens_of_mb_comes_over_several_connections(capsys, hub_factory, tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    data = random.Random(5).randbytes(30 * 1000 * 1000)
    (root / "config.json").write_text("{}\n")
    (root / "model.safetensors").write_bytes(data)
    hub = serve(hub_factory, REPO, root)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    ranges = sorted(r.headers.get("range") for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors"))
    assert len(ranges) == len(data) // MIN_PART >= 3, ranges  # it used to be one GET, one connection
    blob = (RepoPaths(cache(), REPO).snapshot(hub.commit(REPO)) / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256(data).hexdigest() and blob.read_bytes() == data
