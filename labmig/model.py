"""The result of a migration, the same for the simulator and the real backends.

    MigrationResult   totals of one run (times, bytes by phase, outcome, words)
    ├── TimelinePoint one sample per iteration / poll: what was sent, dirtied, left
    └── Event         a named moment: "switchover", "throttle 30%", "link cut" …
    Outcome           completed / did-not-converge / aborted / failed / rolled-back

Everything here is plain data: no I/O beyond (de)serialising to JSON and CSV, so
every table, plot and widget can take a result from any backend. Times are
seconds since the start of the run, sizes are bytes, rates bytes per second.
"""
from __future__ import annotations

import csv
import enum
import io
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class Outcome(str, enum.Enum):
    COMPLETED = "completed"
    DID_NOT_CONVERGE = "did-not-converge"
    ABORTED = "aborted"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    REVERTED = "reverted"

    def __str__(self) -> str:
        return self.value


# Phases named in timelines and in MigrationResult.bytes_by_phase.
PHASES = (
    "precopy",        # iterative memory rounds while the VM runs
    "stop-and-copy",  # the last round with the VM paused (live) = downtime
    "postcopy",       # the VM runs on the destination, pages pulled/pushed
    "disk",           # block migration of local disks, or cold disk copy
    "shutdown",       # cold: the guest powers off on the source
    "boot",           # cold: the guest boots on the destination
)


@dataclass
class TimelinePoint:
    """One sample of a running migration (one iteration in the simulator, one poll for libvirt)."""

    t: float
    phase: str
    iteration: int = 0
    pages_sent: int = 0              # pages sent in this sample's interval
    pages_dirtied: int = 0           # pages dirtied during this sample's interval
    remaining_bytes: int = 0         # memory (or disk) still to send at the end of the interval
    bytes_sent_total: int = 0        # cumulative bytes on the wire so far
    bandwidth: float = 0.0           # bytes/s achieved in the interval
    dirty_rate: float = 0.0          # bytes/s dirtied in the interval
    throttle_pct: float = 0.0        # auto-converge CPU throttle in effect
    expected_downtime: float | None = None  # seconds, when the backend can say
    faults: int = 0                  # post-copy: remote page faults in the interval


@dataclass
class Event:
    """A named moment in a run."""

    t: float
    kind: str
    message: str = ""


@dataclass
class MigrationResult:
    """Totals of one migration, from any backend."""

    kind: str                          # "live" or "cold"
    strategy: str                      # registry name, e.g. "precopy", "postcopy", "cold"
    backend: str                       # "sim", "libvirt"
    outcome: Outcome
    total_time: float                  # seconds from start to the VM running on one host
    downtime: float                    # seconds the guest did not run (QEMU's figure for live)
    vm: str = ""
    source: str = ""
    destination: str = ""
    memory_bytes: int = 0
    bytes_by_phase: dict[str, int] = field(default_factory=dict)
    iterations: int = 0
    postcopy_faults: int = 0
    fault_wait_time: float = 0.0       # seconds the guest waited on remote page faults
    throttle_time: float = 0.0         # seconds spent with a CPU throttle above zero
    max_throttle_pct: float = 0.0
    client_interruption: float | None = None  # longest gap a network client of the guest saw
    message: str = ""                  # what happened, in words
    timeline: list[TimelinePoint] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_phase.values())

    @property
    def completed(self) -> bool:
        return self.outcome == Outcome.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        data["bytes_total"] = self.bytes_total
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MigrationResult":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["outcome"] = Outcome(kwargs["outcome"])
        kwargs["timeline"] = [TimelinePoint(**p) for p in kwargs.get("timeline", [])]
        kwargs["events"] = [Event(**e) for e in kwargs.get("events", [])]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "MigrationResult":
        return cls.from_dict(json.loads(text))

    def timeline_csv(self) -> str:
        """The timeline as CSV with a header row, one line per point."""
        out = io.StringIO()
        names = [f.name for f in fields(TimelinePoint)]
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for point in self.timeline:
            writer.writerow(asdict(point))
        return out.getvalue()

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a human table."""
        from .units import format_duration, format_size

        rows = [
            ("outcome", str(self.outcome)),
            ("strategy", self.strategy),
            ("total time", format_duration(self.total_time)),
            ("downtime", format_duration(self.downtime)),
        ]
        if self.client_interruption is not None:
            rows.append(("client-seen interruption", format_duration(self.client_interruption)))
        rows.append(("bytes on the wire", format_size(self.bytes_total)))
        for phase, nbytes in self.bytes_by_phase.items():
            rows.append((f"  {phase}", format_size(nbytes)))
        rows.append(("iterations", str(self.iterations)))
        if self.postcopy_faults:
            rows.append(("post-copy faults", f"{self.postcopy_faults} ({format_duration(self.fault_wait_time)} waiting)"))
        if self.max_throttle_pct:
            rows.append(("max throttle", f"{self.max_throttle_pct:.0f} % ({format_duration(self.throttle_time)})"))
        if self.message:
            rows.append(("what happened", self.message))
        placement = self.extra.get("placement")
        if placement:
            rows.append(("where it is now", placement["words"]))
        return rows
