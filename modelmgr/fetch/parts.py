"""A blob's byte ranges and their resume state.

Which ranges are done is kept in ``.modelmgr/partial/{etag}.json``, saved only after the bytes it
describes were written, so after ``kill -9`` it can lag behind the data but never run ahead.
What is read back is checked for shape before use: a state file that is not exactly what this
module writes (another version's, a truncated write, a hand edit) is treated as absent.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from modelmgr.cache.layout import RepoPaths
from modelmgr.fsutil import write_atomic

# Part sizes (see part_size): never below MIN_PART, never split finer than SPREAD_PART needs.
MIN_PART = 8 * 1024 * 1024
SPREAD_PART = 32 * 1024 * 1024
STATE_EVERY = 16 * 1024 * 1024  # persist resume state after this much progress...
STATE_SECONDS = 1.0  # ...or after this long, so a slow link never loses more than a second's bytes
SMALL_FILE = 4 * 1024 * 1024  # smaller files restart from zero instead of keeping state
MAX_STATE_BYTES = 1024 * 1024  # a state file is a few hundred bytes; anything huge is not ours


@dataclass
class Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def offset(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.start + self.done >= self.end


def part_size(fetch_bytes: int, connections: int) -> int:
    """The size a pull splits its files into: its bytes spread over its connections in about one
    wave, within [MIN_PART, SPREAD_PART].

    A connection per part costs a handshake (TCP, TLS) before its first byte. In one wave those
    handshakes happen side by side, so splitting costs a fast endpoint almost nothing and gives a
    slow-per-connection one every connection; finer parts would queue behind the connection
    limit and pay a handshake each, one after another. So a pull of a few files of tens of MB
    splits them into parts of MIN_PART or a little more, and a pull of gigabytes keeps big parts.
    Measured in docs/benchmarks.md (benchmarks/bench_pull.py --shape medium).
    """
    return max(MIN_PART, min(SPREAD_PART, -(-fetch_bytes // max(1, connections))))


def split(size: int, prefix: int, connections: int, part: int | None = None) -> list[Part]:
    """``size`` bytes in at most ``connections`` parts of about ``part`` bytes (MIN_PART by default),
    after a ``prefix`` already on disk."""
    part = part or MIN_PART
    parts = [Part(0, prefix, prefix)] if prefix else []
    remaining = size - prefix
    count = max(1, min(connections, remaining // part))
    step = -(-remaining // count) if remaining else 0
    start = prefix
    while start < size:
        end = min(size, start + step)
        parts.append(Part(start, end))
        start = end
    return parts or [Part(0, 0)]


class PartsProgress:
    """Parts of one file, the contiguous prefix a hasher may read, and the resume state file."""

    def __init__(self, parts: list[Part], state_path: Path | None, etag: str, size: int):
        self.parts = parts
        self.cond = threading.Condition()
        self.state_path = state_path
        self.etag = etag
        self.size = size
        self.unsaved = 0
        self.saved_at = time.monotonic()
        self.stop = False

    @property
    def done(self) -> int:
        return sum(p.done for p in self.parts)

    def prefix(self) -> int:
        position = 0
        for part in self.parts:
            if part.start != position:
                break
            position = part.offset
            if not part.complete:
                break
        return position

    def advance(self, part: Part, count: int) -> None:
        with self.cond:
            part.done += count
            self.unsaved += count
            if self.unsaved >= STATE_EVERY or time.monotonic() - self.saved_at >= STATE_SECONDS:
                self.save_locked()
            self.cond.notify_all()

    def save_locked(self) -> None:
        self.unsaved = 0
        self.saved_at = time.monotonic()
        if self.state_path is None:
            return
        data = {"etag": self.etag, "size": self.size, "parts": [[p.start, p.end, p.done] for p in self.parts]}
        try:
            write_atomic(self.state_path, json.dumps(data))
        except OSError:
            pass  # losing resume state costs a re-download, never correctness

    def save(self) -> None:
        with self.cond:
            self.save_locked()


def state_file(paths: RepoPaths, etag: str) -> Path:
    return paths.partial_state(etag)


def resumable_bytes(paths: RepoPaths, etag: str, size: int) -> int:
    """Bytes of a partial download the next pull will keep, as the download itself counts them.

    Not the size of ``.incomplete``: ranges are written at their offsets, so a file fetched over
    several connections is sparse and its size overstates what is there. Small files restart.
    """
    incomplete = paths.incomplete(etag)
    if size <= SMALL_FILE or not incomplete.exists():
        return 0
    parts, _ = load_parts(state_file(paths, etag), incomplete, etag, size, 1)
    return sum(p.done for p in parts)


def load_parts(
    state_path: Path, incomplete: Path, etag: str, size: int, connections: int, part: int | None = None
) -> tuple[list[Part], str | None]:
    """Resume state, or a fresh split; and why a state file found on disk was not used (None
    when there was none, or it was used). Trust the state only when it describes this very blob."""
    try:
        on_disk = os.path.getsize(incomplete)
    except OSError:
        on_disk = 0
    problem = None
    try:
        with open(state_path, "rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        raw = None
    except OSError as exc:
        raw, problem = None, f"cannot be read ({exc.strerror or exc})"
    if raw is not None:
        parts, problem = _parse_state(raw, etag, size)
        if parts is not None:
            if on_disk >= max((p.offset for p in parts if p.done), default=0):
                return parts, None
            problem = "describes more bytes than the partial file holds"
    # No usable state: a sequentially written partial file is still a valid prefix, but only when
    # no state file exists, since a multi-range download leaves holes (the state says where).
    prefix = min(on_disk, size) if on_disk and raw is None and problem is None else 0
    return split(size, prefix, connections, part), problem


def _parse_state(raw: bytes, etag: str, size: int) -> tuple[list[Part] | None, str | None]:
    """The parts a state file holds, when it is exactly what PartsProgress writes for this blob."""
    if len(raw) > MAX_STATE_BYTES:
        return None, "is too large to be a resume state"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "is not valid JSON"
    if not isinstance(data, dict):
        return None, f"holds {type(data).__name__}, not an object"
    if data.get("etag") != etag or not _is_count(data.get("size")) or data["size"] != size:
        return None, "describes another file"
    entries = data.get("parts")
    if not isinstance(entries, list) or not entries:
        return None, "has no list of parts"
    parts = []
    position = 0
    for entry in entries:
        # Exact ints only: json gives 1e400 as float inf and true as a bool, neither a byte count.
        if not (isinstance(entry, list) and len(entry) == 3 and all(_is_count(v) for v in entry)):
            return None, "has a malformed part"
        start, end, done = entry
        if start != position or end < start or done > end - start:
            return None, "has parts that do not tile the file"
        parts.append(Part(start, end, done))
        position = end
    if position != size:
        return None, "has parts that do not cover the file"
    return parts, None


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0
