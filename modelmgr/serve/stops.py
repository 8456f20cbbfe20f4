"""Stop sequences over streamed text, for every backend alike.

A stop string can arrive split over several pieces ("<|e" then "nd|>"), so text that could be
the start of one is held back until the next piece shows whether it is.
"""
from __future__ import annotations


class StopScanner:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that is safe to send now; sets ``stopped`` when a stop string appeared."""
        if not self.stops:
            return piece
        text = self.held + piece
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held, self.stopped = "", True
            return text[:cut]
        keep = 0
        for stop in self.stops:  # the longest tail of text that begins some stop string
            for length in range(min(len(stop) - 1, len(text)), keep, -1):
                if stop.startswith(text[-length:]):
                    keep = length
                    break
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held
