"""What a pull reports while it works. The core emits these; only the CLI draws them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class PlanReady:
    """Sent once the files are chosen, before the first byte: what there is still to fetch."""

    fetch_bytes: int
    files: int


@dataclass(frozen=True)
class FileStarted:
    path: str
    size: int
    resumed_bytes: int = 0


@dataclass(frozen=True)
class BytesReceived:
    path: str
    count: int


@dataclass(frozen=True)
class FileFinished:
    path: str
    size: int
    reused: bool = False


@dataclass(frozen=True)
class Notice:
    message: str


Event = Union[PlanReady, FileStarted, BytesReceived, FileFinished, Notice]
EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: a library caller who did not ask for progress gets none."""
