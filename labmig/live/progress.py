"""A live one-line view of a running migration on a terminal, with events printed above it.

    LiveProgress   ``on_point`` / ``on_event`` callbacks for LiveMigration; draws only
                   when the stream is a terminal (or ``enabled=True``), like rsync
    describe_point()  the line itself, reusable by widgets and logs
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ..model import Event, TimelinePoint
from ..units import format_duration, format_rate, format_size


def describe_point(p: TimelinePoint) -> str:
    parts = [f"{p.t:6.1f}s", p.phase]
    if p.iteration:
        parts.append(f"pass {p.iteration}")
    parts.append(f"left {format_size(p.remaining_bytes)}")
    parts.append(f"sent {format_size(p.bytes_sent_total)}")
    parts.append(f"at {format_rate(p.bandwidth)}")
    if p.dirty_rate:
        parts.append(f"dirtying {format_rate(p.dirty_rate)}")
    if p.throttle_pct:
        parts.append(f"throttle {p.throttle_pct:.0f}%")
    if p.expected_downtime is not None:
        parts.append(f"exp. downtime {format_duration(p.expected_downtime)}")
    return " · ".join(parts)


class LiveProgress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None,
                 events: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.events = events
        self._last = 0.0
        self._line = ""

    def on_point(self, point: TimelinePoint) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self._line = describe_point(point)
        self.stream.write(f"\r{self._line}\x1b[K")
        self.stream.flush()

    def on_event(self, event: Event) -> None:
        if not (self.enabled and self.events):
            return
        self.stream.write(f"\r\x1b[K[{event.t:6.1f}s] {event.kind}: {event.message}\n")
        if self._line:
            self.stream.write(self._line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._line:
            self.stream.write("\n")
            self.stream.flush()
        self._line = ""
