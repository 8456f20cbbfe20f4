"""Pull progress on stderr: a total bar and a bar per active file on a terminal, plain lines
otherwise (logs and CI keep a readable record instead of carriage-return soup)."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

import click

from modelmgr.fetch.events import BytesReceived, Event, FileFinished, FileStarted, Notice, PlanReady
from modelmgr.units import format_size

REDRAW_EVERY = 0.1
BAR = 24


def _bar(done: int, total: int) -> str:
    filled = BAR if total <= 0 else int(BAR * min(done, total) / total)
    return "#" * filled + "." * (BAR - filled)


def _eta(seconds: float) -> str:
    if seconds <= 0 or seconds > 86400 * 7:
        return "--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressView:
    def __init__(self, *, total_bytes: int, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = total_bytes
        self.done = 0
        self.files: dict[str, list[int]] = {}  # path -> [received, size]
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.drawn_lines = 0
        self.last_draw = 0.0

    def __call__(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, FileStarted):
                self.files[event.path] = [0, event.size]
                if not self.tty:
                    resumed = f", resuming at {format_size(event.resumed_bytes)}" if event.resumed_bytes else ""
                    self._line(f"fetching {event.path} ({format_size(event.size)}{resumed})")
            elif isinstance(event, BytesReceived):
                self.done += event.count
                entry = self.files.get(event.path)
                if entry is not None:
                    entry[0] += event.count
            elif isinstance(event, FileFinished):
                self.files.pop(event.path, None)
                if not self.tty:
                    self._line(f"{'cached  ' if event.reused else 'done    '} {event.path} ({format_size(event.size)})")
            elif isinstance(event, Notice):
                self._line(f"note: {event.message}")
            if self.tty:
                now = time.monotonic()
                if now - self.last_draw >= REDRAW_EVERY or isinstance(event, (FileFinished, Notice)):
                    self.last_draw = now
                    self._draw()

    def _line(self, text: str) -> None:
        if self.tty:
            self._erase()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _erase(self) -> None:
        if self.drawn_lines:
            self.stream.write(f"\x1b[{self.drawn_lines}F\x1b[J")
            self.drawn_lines = 0

    def _draw(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        percent = 100 * self.done / self.total if self.total else 100
        lines = [
            f"[{_bar(self.done, self.total)}] {percent:5.1f}% {format_size(self.done)}/{format_size(self.total)}"
            f"  {format_size(int(rate))}/s  ETA {_eta(eta)}"
        ]
        for path, (received, size) in list(self.files.items())[:8]:
            name = path if len(path) <= 36 else "..." + path[-33:]
            lines.append(f"  {name:<36} [{_bar(received, size)}] {format_size(received)}/{format_size(size)}")
        self._erase()
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn_lines = len(lines)

    def close(self) -> None:
        with self.lock:
            if self.tty:
                self._erase()
                self.stream.flush()


@contextmanager
def pull_progress(enabled: bool, *, only_downloads: bool = True, bars: bool = True) -> Iterator[object]:
    """The event sink every command that may pull uses: progress bars on stderr once the plan is
    known, and the notices that come before it (an endpoint failing over while resolving the
    revision or listing the tree) as plain lines. ``only_downloads``: draw nothing for a plan
    that fetches no bytes (run and show on a cached model). ``bars`` False
    (HF_HUB_DISABLE_PROGRESS_BARS=1): notices only."""
    view: ProgressView | None = None

    def on_event(event: object) -> None:
        nonlocal view
        if not enabled:
            return
        if isinstance(event, PlanReady):
            if bars and (event.fetch_bytes or not only_downloads):
                view = ProgressView(total_bytes=event.fetch_bytes)
        elif view is not None:
            view(event)
        elif isinstance(event, Notice):
            click.echo(f"note: {event.message}", err=True)

    try:
        yield on_event
    finally:
        if view is not None:
            view.close()

