"""Auto-converge: pre-copy that throttles the guest's vCPUs until it converges.

    AutoconvergeOptions   cpu_throttle_initial/increment, max_cpu_throttle, trigger threshold
    Autoconverge          QEMU's trigger on every sync, at most once a second

QEMU (migration/ram.c, migration_trigger_throttle) checks at a bitmap sync
when at least a second has passed since the last check: if the bytes dirtied in
that period exceed ``throttle_trigger_threshold`` % (50) of the bytes sent, a
counter goes up, and when it reaches 2 the throttle moves (the counter is then
reset; a quiet period does not reset it). The first move sets
``cpu_throttle_initial`` (20 %), each later one adds ``cpu_throttle_increment``
(10 %), up to ``max_cpu_throttle`` (99 %). With ``cpu_throttle_tailslow`` the
step shrinks to what would bring the dirty rate down to the threshold. A
throttle of ``p`` % keeps the vCPUs asleep ``p`` % of the time, so the
workload writes ``1 - p/100`` as fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..sim.engine import LiveEngine, PassRecord
from .base import option
from .precopy import Precopy, PrecopyOptions


@dataclass
class AutoconvergeOptions(PrecopyOptions):
    cpu_throttle_initial: float = option(20.0, "float", "first throttle, % of vCPU time taken away")
    cpu_throttle_increment: float = option(10.0, "float", "added at each later step, %")
    max_cpu_throttle: float = option(99.0, "float", "the throttle never goes above this, %")
    throttle_trigger_threshold: float = option(50.0, "float", "dirtied bytes above this % of sent bytes count")
    cpu_throttle_tailslow: bool = option(False, "bool", "smaller steps near the end (QEMU cpu-throttle-tailslow)")
    stall_passes: int = option(40, "int", "passes without progress before giving up (throttle needs time)")


class Autoconverge(Precopy):
    name = "autoconverge"
    description = "pre-copy + QEMU's auto-converge CPU throttle (20 %, +10 %, max 99 %)"
    Options = AutoconvergeOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """VIR_MIGRATE_AUTO_CONVERGE with QEMU's cpu-throttle-initial / -increment."""
        o = self.options
        return {**super().to_libvirt(spec), "auto_converge": True,
                "auto_converge_initial": int(round(o.cpu_throttle_initial)),
                "auto_converge_increment": int(round(o.cpu_throttle_increment))}

    def check(self) -> None:
        o = self.options
        if not 1 <= o.cpu_throttle_initial <= 99 or not 1 <= o.max_cpu_throttle <= 100:
            raise InvalidInput("cpu_throttle_initial must be 1-99 and max_cpu_throttle 1-100 (%)",
                               "e.g. cpu_throttle_initial=20 max_cpu_throttle=99")

    def prepare(self, eng: LiveEngine) -> str:
        self._last_check = 0.0
        self._bytes_at_check = 0
        self._dirty_period = 0
        self._high = 0
        return "continue"

    def after_sync(self, eng: LiveEngine, rec: PassRecord) -> None:
        o = self.options
        self._dirty_period += rec.pages_new
        if eng.now < self._last_check + 1.0:
            return
        sent = sum(eng.totals.bytes_by_phase.values())
        xfer = sent - self._bytes_at_check
        dirty = self._dirty_period * eng.page
        threshold = xfer * o.throttle_trigger_threshold / 100.0
        self._last_check, self._bytes_at_check, self._dirty_period = eng.now, sent, 0
        if dirty > threshold:
            self._high += 1
            if self._high >= 2:
                self._high = 0
                self._throttle_down(eng, dirty, threshold)

    def _throttle_down(self, eng: LiveEngine, dirty: float, threshold: float) -> None:
        o = self.options
        now = eng.throttle_pct
        if now == 0:
            new = o.cpu_throttle_initial
        else:
            step = o.cpu_throttle_increment
            if o.cpu_throttle_tailslow:
                cpu_now = 100 - now
                ideal = cpu_now * (threshold / dirty)
                step = min(cpu_now - ideal, step)
            new = now + step
        eng.set_throttle(min(new, o.max_cpu_throttle))
