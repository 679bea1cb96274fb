"""Cold migration: shut down, move the disk and the definition, boot on the target.

    ColdOptions   shutdown_time, boot_time, disk_copy (full | delta), block_size, digest_rate
    Cold          the three phases in virtual time; RAM is not moved (the guest reboots)

With shared storage only the definition moves. With local storage the disk is
copied whole (``full``) or as a hashed delta (``delta``, as ``labmig copy``
does): both hosts digest their copy in blocks (XXH3-128, 16 bytes a block,
at ``digest_rate`` or the disk's speed, whichever is lower), the digests
cross, and only blocks that differ (``Storage.stale_fraction``) are sent.
The guest is down from the start of the shutdown to the end of the boot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import core
from ..errors import InvalidInput
from ..model import Event, MigrationResult, Outcome, TimelinePoint
from ..sim.plan import Plan
from ..units import format_duration, format_size
from .base import Strategy, option

DIGEST_BYTES = 8 * core.DIGEST_WORDS      # one XXH3-128 digest per block, as the core stores it
DEFINITION_BYTES = 8 << 10


@dataclass
class ColdOptions:
    shutdown_time: float = option(5.0, "duration", "guest OS shutdown on the source")
    boot_time: float = option(15.0, "duration", "guest boot on the destination")
    disk_copy: str = option("full", "choice", "full copy, or hashed delta against the destination's copy",
                            choices=("full", "delta"))
    block_size: int = option(64 << 10, "size", "delta block size")
    digest_rate: float = option(4e9, "rate", "bytes/s one host hashes (measure it with the core benchmark)")


class Cold(Strategy):
    name = "cold"
    kind = "cold"
    description = "shutdown, copy the disk (full or hashed delta), boot on the target"
    Options = ColdOptions

    def to_cold(self, spec: Any = None) -> dict[str, Any]:
        """A real cold run copies in blocks of the same size (its deadlines are not the model's times)."""
        return {"block_size": self.options.block_size}

    def check(self) -> None:
        o = self.options
        if o.shutdown_time < 0 or o.boot_time < 0 or o.digest_rate <= 0:
            raise InvalidInput("shutdown_time and boot_time must be 0 or more, digest_rate more than 0",
                               "e.g. shutdown_time=5s boot_time=15s")
        if not core.MIN_BLOCK <= o.block_size <= core.MAX_BLOCK or o.block_size & (o.block_size - 1):
            raise InvalidInput(f"block_size {o.block_size} is not a power of two from "
                               f"{core.MIN_BLOCK} to {core.MAX_BLOCK} bytes", "e.g. block_size=64KiB")

    def simulate(self, plan: Plan, track_versions: bool = False) -> MigrationResult:
        plan = plan.validated()
        o = self.options
        link, st, vm = plan.link, plan.storage, plan.vm
        t = 0.0
        timeline: list[TimelinePoint] = []
        events = [Event(0.0, "shutdown", "guest shutting down on the source")]
        bytes_by_phase = {"shutdown": 0}
        t += o.shutdown_time
        timeline.append(TimelinePoint(t=t, phase="shutdown", remaining_bytes=0 if st.shared else vm.disk_size))
        rate = link.link_rate if not st.disk_bandwidth else min(link.link_rate, st.disk_bandwidth)
        disk_bytes = DEFINITION_BYTES
        copy_time = link.rtt + DEFINITION_BYTES / link.link_rate
        note = "shared storage: only the definition moves"
        if not st.shared:
            if o.disk_copy == "full":
                disk_bytes += vm.disk_size
                copy_time += vm.disk_size / rate
                note = f"full copy of {format_size(vm.disk_size)}"
            else:
                blocks = math.ceil(vm.disk_size / o.block_size)
                stale = math.ceil(blocks * st.stale_fraction)
                hash_rate = o.digest_rate if not st.disk_bandwidth else min(o.digest_rate, st.disk_bandwidth)
                digests = blocks * DIGEST_BYTES
                sent = min(vm.disk_size, stale * o.block_size)
                disk_bytes += digests + sent
                copy_time += vm.disk_size / hash_rate + digests / link.link_rate + sent / rate
                note = f"hashed delta: {stale} of {blocks} blocks differ"
        events.append(Event(t, "disk-copy", note))
        t += copy_time
        bytes_by_phase["disk"] = disk_bytes
        timeline.append(TimelinePoint(t=t, phase="disk", pages_sent=0, remaining_bytes=0,
                                      bytes_sent_total=disk_bytes,
                                      bandwidth=disk_bytes / copy_time if copy_time else 0.0))
        events.append(Event(t, "boot", "guest booting on the destination"))
        t += o.boot_time
        bytes_by_phase["boot"] = 0
        timeline.append(TimelinePoint(t=t, phase="boot", bytes_sent_total=disk_bytes))
        events.append(Event(t, "running", "guest running on the destination"))
        return MigrationResult(
            kind="cold", strategy=self.name, backend="sim", outcome=Outcome.COMPLETED,
            total_time=t, downtime=t, vm=vm.name, source="src", destination="dst", memory_bytes=vm.memory,
            bytes_by_phase=bytes_by_phase, message=f"completed: {note}; down for {format_duration(t)}",
            timeline=timeline, events=events, plan=plan.to_dict())
