"""Virtual time for the simulator: a clock and an agenda of timed events.

    Clock    the current virtual time; only moves forward
    Agenda   timed events (a heap, ties broken by insertion order) that a run
             must stop at: Nova's downtime steps, a completion timeout …

As in SimPy the timeline is exact and deterministic: nothing depends on wall
time, and two events at the same instant fire in the order they were scheduled.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any


class Clock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError(f"time cannot go back ({dt} s)")
        self.now += dt
        return self.now

    def advance_to(self, t: float) -> float:
        return self.advance(max(0.0, t - self.now))


@dataclass(order=True)
class Scheduled:
    t: float
    seq: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False, default=None)


class Agenda:
    """Events waiting for their time."""

    def __init__(self) -> None:
        self._heap: list[Scheduled] = []
        self._seq = itertools.count()

    def schedule(self, t: float, kind: str, payload: Any = None) -> Scheduled:
        item = Scheduled(float(t), next(self._seq), kind, payload)
        heapq.heappush(self._heap, item)
        return item

    def next_time(self) -> float:
        return self._heap[0].t if self._heap else float("inf")

    def pop_due(self, now: float) -> list[Scheduled]:
        """Every event at or before ``now``, in order."""
        due = []
        while self._heap and self._heap[0].t <= now + 1e-12:
            due.append(heapq.heappop(self._heap))
        return due

    def __len__(self) -> int:
        return len(self._heap)
