"""What one run from the panel is: the parameters a student edits, before any backend sees them.

    KINDS            the migration kinds a run can be: "live", "cold"
    MigrationParams  backend, VM, hosts, kind, strategy and its options, the guest's and the
                     link's figures as unit strings (parsed by labmig.units); ``replace()``
                     and ``validate()``

The backends (labmig.widgets.backends) turn these into migrations; the controller
(labmig.widgets.controller) sits above the backends and starts runs with them. Living
here, below both, they let imports run one way: views -> controller -> backends -> params.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..units import parse_duration, parse_rate, parse_size

KINDS = ("live", "cold")


@dataclass
class MigrationParams:
    """Everything one run needs, as a student types it. Sizes and rates are unit strings."""

    backend: str = "simulator"
    kind: str = "live"
    strategy: str = "precopy"
    vm: str = "labvm"
    source: str = "lab1"
    destination: str = "lab2"
    memory: str = "1GiB"
    working_set: str = "512MiB"
    dirty_rate: str = "80MiB/s"
    bandwidth: str = "1Gbit/s"
    downtime_limit: str = "300ms"
    disk: str = "1GiB"
    shared_storage: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    playback: float = 3.0  # simulator only: seconds of wall time the replay of a run takes

    def replace(self, **changes: Any) -> "MigrationParams":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise InvalidInput(f"unknown migration parameter(s): {names}",
                               f"use one of: {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Parse every figure once, so a typo is reported before anything starts."""
        if self.kind not in KINDS:
            raise InvalidInput(f"unknown migration kind {self.kind!r}", "choose live or cold")
        if self.source == self.destination:
            raise InvalidInput(f"source and destination are both {self.source!r}",
                               "pick two different hosts")
        for name in ("memory", "working_set", "disk"):
            if parse_size(getattr(self, name)) <= 0 and name != "working_set":
                raise InvalidInput(f"{name} must be more than zero", "e.g. 1GiB")
        if parse_size(self.working_set) > parse_size(self.memory):
            raise InvalidInput(f"working set {self.working_set} is larger than memory {self.memory}",
                               "the guest can only dirty memory it has")
        if parse_rate(self.bandwidth) <= 0:
            raise InvalidInput(f"bandwidth {self.bandwidth!r} must be more than zero", "e.g. 1Gbit/s")
        parse_rate(self.dirty_rate)
        parse_duration(self.downtime_limit)
        if self.playback < 0:
            raise InvalidInput("playback must be zero or more seconds", "0 shows the result at once")
