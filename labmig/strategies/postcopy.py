"""Post-copy and hybrid migration.

    PostcopyOptions   postcopy_after_passes, postcopy_step
    Postcopy          switch to post-copy after N pre-copy passes (0: at once)
    HybridOptions     + switch when pre-copy stalls, + Nova's policy
    Hybrid            pre-copy first; post-copy when it does not converge;
                      optionally Nova's downtime steps and completion timeout
    nova_downtime_steps(...)   Nova's schedule of growing downtime limits

In post-copy the guest runs on the destination as soon as the device state is
there (the downtime); a page it touches that is still on the source faults:
the vCPU waits a round trip plus the page's transfer, and the page goes ahead
of the background push, which streams the rest in address order. Each page
crosses once, so post-copy sends no more than pre-copy; faults slow the guest.

Nova (nova/virt/libvirt/migration.py) raises the downtime limit in steps:
with ``live_migration_downtime`` D ms, ``…_steps`` S and ``…_delay`` d s per
GiB of data, step i (0..S) at ``int(d × data_gib × i)`` s sets
``int(D/S + (D - D/S)/S × i)`` ms. After ``live_migration_completion_timeout``
× data_gib seconds it aborts, or with ``force_complete`` switches to post-copy
(when permitted) or pauses the guest so that pre-copy completes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput
from ..sim.clock import Scheduled
from ..sim.engine import LiveEngine, PassRecord
from .base import option
from .precopy import Precopy, PrecopyOptions

GiB = 1 << 30


@dataclass
class PostcopyOptions(PrecopyOptions):
    postcopy_after_passes: int = option(0, "int", "pre-copy passes before the switch to post-copy; 0 = at once")
    postcopy_step: float = option(0.1, "duration", "simulation step of the post-copy phase")


class Postcopy(Precopy):
    name = "postcopy"
    description = "switch to post-copy (after N pre-copy passes): faults + background push"
    Options = PostcopyOptions

    def check(self) -> None:
        if self.options.postcopy_after_passes < 0 or self.options.postcopy_step <= 0:
            raise InvalidInput("postcopy_after_passes must be 0 or more and postcopy_step more than 0",
                               "e.g. postcopy_after_passes=1 postcopy_step=100ms")

    def prepare(self, eng: LiveEngine) -> str:
        return "postcopy" if self.options.postcopy_after_passes == 0 else "continue"

    def decide(self, eng: LiveEngine, rec: PassRecord) -> str:
        verdict = super().decide(eng, rec)
        if verdict == "continue" and eng.iterations >= self.options.postcopy_after_passes:
            return "postcopy"
        return verdict

    def not_converging(self, eng: LiveEngine, rec: PassRecord) -> str:
        return "postcopy"


def nova_downtime_steps(downtime_ms: int, steps: int, delay_s: float, data_gib: float) -> list[tuple[int, int]]:
    """(seconds after start, downtime limit in ms) pairs, as Nova computes them."""
    downtime_ms, steps, delay_s = max(100, downtime_ms), max(3, steps), max(10.0, delay_s)
    delay = int(delay_s * data_gib)
    base = downtime_ms / steps
    offset = (downtime_ms - base) / steps
    return [(int(delay * i), int(base + offset * i)) for i in range(steps + 1)]


@dataclass
class HybridOptions(PostcopyOptions):
    postcopy_after_passes: int = option(1, "int", "pre-copy passes before switching to post-copy "
                                        "(not under nova_policy, where the completion timeout decides)")
    nova_policy: bool = option(False, "bool", "follow Nova: downtime steps, completion timeout and its action")
    live_migration_downtime: int = option(500, "int", "Nova: final downtime limit, ms")
    live_migration_downtime_steps: int = option(10, "int", "Nova: number of downtime increases")
    live_migration_downtime_delay: float = option(75.0, "float", "Nova: seconds per GiB between increases")
    live_migration_completion_timeout: float = option(800.0, "float",
                                                      "Nova: seconds per GiB before the action; 0 = none")
    live_migration_timeout_action: str = option("force_complete", "choice", "Nova: abort or force_complete",
                                                choices=("abort", "force_complete"))
    live_migration_permit_post_copy: bool = option(True, "bool", "Nova: force_complete may switch to post-copy")


class Hybrid(Postcopy):
    name = "hybrid"
    description = "pre-copy, then post-copy after N passes or on stall; optional Nova policy"
    Options = HybridOptions

    def check(self) -> None:
        super().check()
        if self.options.live_migration_completion_timeout < 0:
            raise InvalidInput("live_migration_completion_timeout must be 0 or more", "0 disables it")

    def prepare(self, eng: LiveEngine) -> str:
        o = self.options
        if not o.nova_policy:
            return super().prepare(eng)
        plan = eng.plan
        data_gib = plan.vm.memory / GiB + (0 if plan.storage.shared else plan.vm.disk_size / GiB)
        for t, ms in nova_downtime_steps(o.live_migration_downtime, o.live_migration_downtime_steps,
                                         o.live_migration_downtime_delay, data_gib):
            eng.agenda.schedule(eng.now + t, "downtime", ms / 1000.0)
        if o.live_migration_completion_timeout:
            eng.agenda.schedule(eng.now + o.live_migration_completion_timeout * data_gib, "timeout")
        eng.on_event = self._on_event
        for item in eng.agenda.pop_due(eng.now):
            self._on_event(item)
        return "continue"

    def _on_event(self, item: Scheduled) -> None:
        eng, o = self.engine, self.options
        if item.kind == "downtime":
            eng.downtime_limit = item.payload
            eng.event("downtime-limit", f"Nova sets the downtime limit to {item.payload * 1000:.0f} ms")
        elif item.kind == "timeout":
            if o.live_migration_timeout_action == "abort":
                eng.interrupt = "abort"
            elif o.live_migration_permit_post_copy:
                eng.interrupt = "postcopy"
            else:
                eng.interrupt = "pause"
            eng.event("completion-timeout", f"Nova's completion timeout: {eng.interrupt}")

    def decide(self, eng: LiveEngine, rec: PassRecord) -> str:
        o = self.options
        if not o.nova_policy:
            return super().decide(eng, rec)
        # Under Nova only the completion timeout ends a stalled pre-copy.
        if self.converged(eng, rec):
            return "complete"
        if eng.now >= eng.plan.max_time or eng.iterations >= o.max_iterations:
            return "giveup"
        return "continue"
