"""Pre-copy, the default live migration, and the loop the other live strategies reuse.

    PrecopyOptions   downtime_limit, zero_page_detection, stop rule (the cap on the
                     stream, max_bandwidth, belongs to the plan: it applies to every strategy)
    Precopy          passes until QEMU's switch-over rule holds, then stop-and-copy

QEMU's rule: after each sync, switch over when the pending RAM is below the
threshold ``measured bandwidth × downtime_limit``; the pause then sends what is
pending (and the device state). When to sync: ``bitmap_sync="pass"`` syncs at
the end of each pass over the bitmap (the textbook model, which
labmig.sim.analytic solves in closed form); ``bitmap_sync="qemu"`` syncs as QEMU
does, as soon as the pending count drops below the threshold, checking after
every ``check_interval`` of sending: near the end it syncs every slice, and
the downtime ends up close to the limit. QEMU itself never gives up; the simulator calls
a run "did not converge" on labmig's stall rule (labmig.nova.StallRule, the one the live
policies use too: the pending volume has not dropped 5 % below its best for
``stall_passes`` passes lasting ``stall_time``; the dirty set outruns the link), or after
``max_iterations`` passes or the plan's ``max_time``.

The classic Xen rules (``stop_rule="xen"``) stop iterating after 29 passes,
when fewer than 50 pages are pending, or once 3× the memory has been sent, and
then stop-and-copy whatever is left: always completes, sometimes with a long
pause.

Subclasses hook in at ``prepare`` (schedule agenda events), ``after_sync``
(auto-converge's throttle), ``decide`` (switch-over / post-copy / give up) and
``make_engine`` (compression).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..model import MigrationResult, Outcome
from ..nova import STALL_PASSES, STALL_SECONDS, StallRule, StallTracker
from ..sim.engine import LiveEngine, PassRecord
from ..sim.plan import Plan
from ..units import format_duration, format_rate, format_size
from .base import Strategy, option


@dataclass
class PrecopyOptions:
    downtime_limit: float = option(0.3, "duration", "longest pause allowed at switch-over (QEMU downtime-limit)")
    zero_page_detection: bool = option(True, "bool", "send zero pages as a header only (QEMU does by default)")
    stop_rule: str = option("qemu", "choice", "qemu: pending < bandwidth x downtime_limit; xen: Xen's 3 rules",
                            choices=("qemu", "xen"))
    xen_max_iterations: int = option(29, "int", "xen rule: stop after this many passes")
    xen_min_pages: int = option(50, "int", "xen rule: stop when fewer pages than this are pending")
    xen_max_factor: float = option(3.0, "float", "xen rule: stop once this many times the memory was sent")
    bitmap_sync: str = option("pass", "choice", "pass: sync at the end of each pass (the closed-form model); "
                              "qemu: sync as soon as pending < threshold, checked every check_interval",
                              choices=("pass", "qemu"))
    check_interval: float = option(0.05, "duration", "qemu sync: sending slice between checks (ram_save_iterate)")
    stall_passes: int = option(STALL_PASSES, "int",
                               "call it non-converging after this many passes without progress")
    stall_time: float = option(STALL_SECONDS, "duration", "... lasting at least this long")
    max_iterations: int = option(1000, "int", "give up after this many passes")


class Precopy(Strategy):
    name = "precopy"
    kind = "live"
    description = "iterative pre-copy; switch over when pending < bandwidth x downtime limit"
    Options = PrecopyOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """Plain pre-copy: its downtime limit is QEMU's (virDomainMigrateSetMaxDowntime)."""
        return {"max_downtime": self.options.downtime_limit}

    # -- hooks ---------------------------------------------------------------
    def make_engine(self, plan: Plan, track_versions: bool) -> LiveEngine:
        o = self.options
        return LiveEngine(plan, zero_page_detection=o.zero_page_detection,
                          track_versions=track_versions)

    def prepare(self, eng: LiveEngine) -> str:
        """Before the first pass; returns the first verdict ("continue" or "postcopy")."""
        return "continue"

    def after_sync(self, eng: LiveEngine, rec: PassRecord) -> None:
        """Called after every sync, before ``decide``."""

    def sync_below(self, eng: LiveEngine) -> float | None:
        """With bitmap_sync="qemu": QEMU syncs once pending < threshold_size (in pages)."""
        o = self.options
        if o.bitmap_sync != "qemu" or o.stop_rule != "qemu":
            return None
        return eng.bandwidth * eng.downtime_limit / eng.page

    def converged(self, eng: LiveEngine, rec: PassRecord) -> bool:
        o = self.options
        if o.stop_rule == "xen":
            sent = sum(eng.totals.bytes_by_phase.values())
            return (rec.pending_pages < o.xen_min_pages or eng.iterations >= o.xen_max_iterations
                    or sent >= o.xen_max_factor * eng.plan.vm.memory)
        return rec.pending_pages == 0 or rec.pending_pages * eng.page < self.threshold(eng, rec)

    def threshold(self, eng: LiveEngine, rec: PassRecord) -> float:
        """QEMU's threshold_size: the bandwidth measured while sending × downtime_limit."""
        measured = rec.wire_bytes / rec.duration if rec.duration > 0 and rec.wire_bytes else eng.bandwidth
        return measured * eng.downtime_limit

    def decide(self, eng: LiveEngine, rec: PassRecord) -> str:
        if self.converged(eng, rec):
            return "complete"
        o = self.options
        self.stall.observe(rec.pending_pages * eng.page, eng.now)
        if self.stall.stalled or eng.iterations >= o.max_iterations or eng.now >= eng.plan.max_time:
            return self.not_converging(eng, rec)
        return "continue"

    def not_converging(self, eng: LiveEngine, rec: PassRecord) -> str:
        return "giveup"

    # -- the loop ------------------------------------------------------------
    def simulate(self, plan: Plan, track_versions: bool = False) -> MigrationResult:
        eng = self.make_engine(plan, track_versions)
        eng.downtime_limit = self.options.downtime_limit
        self.engine = eng
        self.stall = StallTracker(StallRule(passes=self.options.stall_passes, seconds=self.options.stall_time))
        verdict = self.prepare(eng)  # timers (Nova's) run from the start, disk mirror included
        if not plan.storage.shared:
            size = plan.vm.disk_size
            if not eng.mirror_disk(size, plan.storage.disk_dirty_rate, plan.storage.disk_bandwidth):
                return eng.result(self.name, Outcome.DID_NOT_CONVERGE,
                                  f"did not converge: the guest writes its disk at "
                                  f"{format_rate(plan.storage.disk_dirty_rate)}, faster than the mirror copies")
        rec: Optional[PassRecord] = None
        while verdict == "continue":
            rec = eng.run_pass(sync_below=self.sync_below(eng), check_interval=self.options.check_interval)
            if rec.interrupted:
                verdict = eng.interrupt or "abort"
                break
            self.after_sync(eng, rec)
            verdict = self.decide(eng, rec)
        return self.finish(eng, verdict, rec)

    def finish(self, eng: LiveEngine, verdict: str, rec: Optional[PassRecord]) -> MigrationResult:
        passes = eng.iterations
        if verdict in ("complete", "pause"):
            how = "paused by the completion timeout; " if verdict == "pause" else ""
            downtime = eng.stop_and_copy()
            return eng.result(self.name, Outcome.COMPLETED,
                              f"completed: {how}{passes} passes, then {format_duration(downtime)} of downtime")
        if verdict == "postcopy":
            eng.postcopy(getattr(self.options, "postcopy_step", 0.1))
            t = eng.totals
            return eng.result(self.name, Outcome.COMPLETED,
                              f"completed in post-copy after {passes} pre-copy passes: "
                              f"{t.postcopy_faults} remote faults, guest waited {format_duration(t.fault_wait_time)}")
        if verdict == "abort":
            return eng.result(self.name, Outcome.ABORTED,
                              f"aborted at {format_duration(eng.now)} by the completion timeout; "
                              "the VM keeps running on the source")
        assert rec is not None
        threshold = self.threshold(eng, rec)
        dirty = rec.pages_dirtied * eng.page / rec.duration if rec.duration > 0 else 0.0
        return eng.result(self.name, Outcome.DID_NOT_CONVERGE,
                          f"did not converge: after {passes} passes {format_size(rec.pending_pages * eng.page)} "
                          f"stayed pending, above the switch-over threshold {format_size(threshold)} "
                          f"(bandwidth x downtime limit); the guest dirtied {format_rate(dirty)} of pages "
                          f"against {format_rate(eng.bandwidth)} of bandwidth")
