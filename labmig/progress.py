"""A one-line progress display for long work, shown only on a terminal.

``Progress(total, label)`` is a context manager; call ``update(done)`` as work
advances. When stderr is not a terminal (CI, pipes, ``--json``) it prints
nothing, like rsync without ``--progress``.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: float, label: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, unit: str = "B") -> None:
        self.total = max(float(total), 1.0)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.unit = unit
        self.started = time.monotonic()
        self._last_draw = 0.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, done: float, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and done < self.total:
            return
        self._last_draw = now
        fraction = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            from .units import format_size
            speed = f"{format_size(rate)}/s"
        else:
            speed = f"{rate:.1f} {self.unit}/s"
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}% {speed} {note}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
