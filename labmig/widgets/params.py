"""What one run from the panel is: the parameters a student edits, before any backend sees them.

    KINDS            the migration kinds a run can be: "live", "cold"
    MigrationParams  backend, VM, hosts, kind, strategy and its options, the guest's and the
                     link's figures as unit strings (parsed by labmig.units); ``replace()``,
                     ``validate()`` and ``to_spec()``, the labmig.spec.MigrationSpec every
                     backend runs

The panel's words are the command line's: ``link_rate`` is the capacity of the path
between the hosts (``--link-rate``), ``max_bandwidth`` QEMU's cap on the migration
stream (``--max-bandwidth``; empty = no cap). The prediction and the real run take the
same spec, so the simulator predicts the experiment that runs.

The backends (labmig.widgets.backends) turn these into migrations; the controller
(labmig.widgets.controller) sits above the backends and starts runs with them. Living
here, below both, they let imports run one way: views -> controller -> backends -> params.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..spec import MigrationSpec
from ..strategies import STRATEGIES
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
    link_rate: str = "1Gbit/s"
    max_bandwidth: str = ""          # no cap
    downtime_limit: str = "300ms"
    disk: str = "1GiB"
    shared_storage: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    playback: float = 3.0  # simulator only: seconds of wall time the replay of a run takes

    def replace(self, **changes: Any) -> "MigrationParams":
        if "bandwidth" in changes:
            raise InvalidInput("the panel has no 'bandwidth': it meant two things",
                               "set link_rate (the capacity of the path between the hosts) or "
                               "max_bandwidth (QEMU's cap on the migration stream)")
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
        if parse_rate(self.link_rate) <= 0:
            raise InvalidInput(f"link rate {self.link_rate!r} must be more than zero", "e.g. 1Gbit/s")
        if self.max_bandwidth.strip() and parse_rate(self.max_bandwidth) <= 0:
            raise InvalidInput(f"max bandwidth {self.max_bandwidth!r} must be more than zero",
                               "e.g. 32MiB/s, or leave it empty for no cap")
        parse_rate(self.dirty_rate)
        parse_duration(self.downtime_limit)
        if self.playback < 0:
            raise InvalidInput("playback must be zero or more seconds", "0 shows the result at once")

    def to_spec(self, **run_options: Any) -> MigrationSpec:
        """The migration these parameters describe, for any backend (units parsed here, once).

        ``run_options`` are the knobs only a real run has (labmig.spec.MigrationSpec.run_options).
        The max downtime field is the strategy's ``downtime_limit`` where it has one.
        """
        self.validate()
        options = dict(self.options)
        cls = STRATEGIES.get(self.strategy)
        if cls is not None and "downtime_limit" in {f.name for f in dataclasses.fields(cls.Options)}:
            options.setdefault("downtime_limit", self.downtime_limit)
        return MigrationSpec.from_dict({
            "vm": {"name": self.vm, "memory": self.memory, "disk_size": self.disk},
            "workload": {"dirty_rate": self.dirty_rate, "wss": self.working_set},
            "link": {"link_rate": self.link_rate},
            "storage": {"shared": self.shared_storage},
            "strategy": self.strategy,
            "kind": self.kind,
            "options": options,
            "max_bandwidth": self.max_bandwidth.strip() or 0,
            "source": self.source,
            "destination": self.destination,
            "run_options": run_options,
        })
