"""Post-copy and hybrid migration.

    PostcopyOptions   postcopy_after_passes, postcopy_step
    Postcopy          switch to post-copy after N pre-copy passes (0: at once)
    HybridOptions     + switch when pre-copy stalls, + Nova's policy
    Hybrid            pre-copy first; post-copy when it does not converge;
                      optionally Nova's downtime steps and completion timeout
    nova_settings(o)  the labmig.nova.NovaSettings a HybridOptions asks for

In post-copy the guest runs on the destination as soon as the device state is
there (the downtime); a page it touches that is still on the source faults:
the vCPU waits a round trip plus the page's transfer, and the page goes ahead
of the background push, which streams the rest in address order. Each page
crosses once, so post-copy sends no more than pre-copy; faults slow the guest.

Under ``nova_policy`` the rules are Nova's, from labmig.nova (the live policies use
the same): the downtime limit rises in steps scheduled from the start, and after
the completion timeout, both scaled by the data size, the run is aborted, or with
``force_complete`` switched to post-copy (when permitted) or paused so that
pre-copy completes. The hybrid's own defaults differ from Nova's in two places:
it forces completion (Nova aborts) and permits post-copy (Nova does not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import nova
from ..errors import InvalidInput
from ..sim.clock import Scheduled
from ..sim.engine import LiveEngine, PassRecord
from .base import option
from .precopy import Precopy, PrecopyOptions


@dataclass
class PostcopyOptions(PrecopyOptions):
    postcopy_after_passes: int = option(0, "int", "pre-copy passes before the switch to post-copy; 0 = at once")
    postcopy_step: float = option(0.1, "duration", "simulation step of the post-copy phase")


class Postcopy(Precopy):
    name = "postcopy"
    description = "switch to post-copy (after N pre-copy passes): faults + background push"
    Options = PostcopyOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """VIR_MIGRATE_POSTCOPY, switched to at once or after N passes (virDomainMigrateStartPostCopy)."""
        passes = int(self.options.postcopy_after_passes)
        return {**super().to_libvirt(spec), "postcopy": f"after:{passes}" if passes else "now"}

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


@dataclass
class HybridOptions(PostcopyOptions):
    postcopy_after_passes: int = option(1, "int", "pre-copy passes before switching to post-copy "
                                        "(not under nova_policy, where the completion timeout decides)")
    nova_policy: bool = option(False, "bool", "follow Nova: downtime steps, completion timeout and its action")
    live_migration_downtime: int = option(nova.NOVA_DOWNTIME_MS, "int",
                                          f"Nova: final downtime limit, ms (at least {nova.NOVA_DOWNTIME_MIN_MS})")
    live_migration_downtime_steps: int = option(nova.NOVA_DOWNTIME_STEPS, "int",
                                                f"Nova: number of downtime increases "
                                                f"(at least {nova.NOVA_DOWNTIME_STEPS_MIN})")
    live_migration_downtime_delay: float = option(nova.NOVA_DOWNTIME_DELAY, "float",
                                                  f"Nova: seconds per GiB between increases "
                                                  f"(at least {nova.NOVA_DOWNTIME_DELAY_MIN:g})")
    live_migration_completion_timeout: float = option(nova.NOVA_COMPLETION_TIMEOUT, "float",
                                                      "Nova: seconds per GiB before the action; 0 = none")
    live_migration_timeout_action: str = option("force_complete", "choice",
                                                "Nova: abort or force_complete (Nova's default: abort)",
                                                choices=nova.TIMEOUT_ACTIONS)
    live_migration_permit_post_copy: bool = option(True, "bool", "Nova: force_complete may switch to post-copy "
                                                   "(Nova's default: no)")


def nova_settings(options: HybridOptions) -> nova.NovaSettings:
    """Nova's timers as the hybrid's options give them (refused below Nova's minimums)."""
    return nova.NovaSettings(downtime_ms=options.live_migration_downtime,
                             downtime_steps=options.live_migration_downtime_steps,
                             downtime_delay=options.live_migration_downtime_delay,
                             completion_timeout=options.live_migration_completion_timeout)


class Hybrid(Postcopy):
    name = "hybrid"
    description = "pre-copy, then post-copy after N passes or on stall; optional Nova policy"
    Options = HybridOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """Post-copy after N passes, or when the completion timeout forces it; under Nova, its timers."""
        o = self.options
        passes = int(o.postcopy_after_passes)
        mapping = {"max_downtime": o.downtime_limit, "postcopy": f"after:{passes}" if passes else "on-timeout"}
        if o.nova_policy:
            # Under Nova only the completion timeout's action switches (labmig.nova).
            mapping.update(policy="nova", nova=nova_settings(o), max_downtime=o.live_migration_downtime / 1000.0,
                           timeout_action=o.live_migration_timeout_action.replace("_", "-"),
                           postcopy="on-timeout" if o.live_migration_permit_post_copy else "off")
        return mapping

    def check(self) -> None:
        super().check()
        if self.options.nova_policy:
            nova_settings(self.options)

    def prepare(self, eng: LiveEngine) -> str:
        o = self.options
        if not o.nova_policy:
            return super().prepare(eng)
        plan, settings = eng.plan, nova_settings(o)
        size_gib = nova.data_gib(plan.vm.memory, [] if plan.storage.shared else [plan.vm.disk_size])
        for t, ms in nova.downtime_steps(settings, size_gib):
            eng.agenda.schedule(eng.now + t, "downtime", ms / 1000.0)
        timeout = nova.completion_timeout(settings, size_gib)
        if timeout:
            eng.agenda.schedule(eng.now + timeout, "timeout")
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
            eng.interrupt = nova.timeout_outcome(o.live_migration_timeout_action, o.live_migration_permit_post_copy)
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
