"""OpenStack Nova's live-migration rules, written once; pure logic, no libvirt, no simulator.

The simulator's ``hybrid`` strategy under ``nova_policy`` (labmig.strategies.postcopy) and the
live policies (labmig.live.policies) both take their rules from here, so a simulated and a real
run follow the same schedule. Each name follows one piece of Nova (nova/virt/libvirt/…):

    NOVA_DOWNTIME_MS, NOVA_DOWNTIME_STEPS, NOVA_DOWNTIME_DELAY, NOVA_COMPLETION_TIMEOUT,
    NOVA_TIMEOUT_ACTION, NOVA_PERMIT_POST_COPY
                            the defaults of nova.conf's [libvirt] live_migration_* options
    NOVA_DOWNTIME_MIN_MS, NOVA_DOWNTIME_STEPS_MIN, NOVA_DOWNTIME_DELAY_MIN
                            the least values those options accept (nova/conf/libvirt.py)
    NOVA_MIN_DATA_GIB       the floor under RAM and under each copied disk (2 GiB)
    TIMEOUT_ACTIONS         "abort", "force_complete" (live_migration_timeout_action)
    NovaSettings            the downtime ramp and completion timeout of one run;
                            refuses what Nova's configuration refuses
    data_gib()              driver.py LibvirtDriver._live_migration_data_gb
    downtime_steps()        migration.py downtime_steps: the (seconds, ms) ramp
    downtime_at()           migration.py update_downtime: the step in force after ``elapsed``
    completion_timeout()    driver.py _live_migration_monitor:
                            int(live_migration_completion_timeout × data_gb)
    should_trigger_timeout_action()   migration.py should_trigger_timeout_action
    timeout_outcome()       what the timeout action does: driver.py _live_migration_monitor
                            (abort_job, or live_migration_force_complete) and migration.py
                            run_tasks ("force-complete": post-copy when enabled, else pause)

Values below Nova's minimums are refused, as nova.conf refuses them (oslo.config ``min=``
since 2016; before that Nova rounded them up to the same LIVE_MIGRATION_DOWNTIME_*_MIN
constants, with a delay minimum of 10 s, where the option now says 3 s).

Nova no longer decides on post-copy by itself: its ``should_switch_to_postcopy`` (switch
when a pass left more than 90 % of what the pass before left) went with
``live_migration_progress_timeout`` in 2018-2019. Only the completion timeout's
``force_complete`` (or the force-complete API) switches now.

labmig's own rule, which neither Nova nor QEMU has (QEMU never gives up on pre-copy):

    StallRule, StallTracker, STALL_MIN_PROGRESS, STALL_PASSES, STALL_SECONDS
                            "pre-copy is not converging": the pending volume has not dropped
                            5 % below its best for 5 passes lasting 10 s or more. The
                            simulator ends a plain pre-copy with "did not converge" on it;
                            the live side reports it and its postcopy-on-stall policy
                            switches to post-copy on it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InvalidInput

log = logging.getLogger(__name__)

GiB = 1 << 30

# Defaults of nova.conf's [libvirt] options.
NOVA_DOWNTIME_MS = 500             # live_migration_downtime: the last, largest limit, ms
NOVA_DOWNTIME_STEPS = 10           # live_migration_downtime_steps
NOVA_DOWNTIME_DELAY = 75.0         # live_migration_downtime_delay: seconds per GiB between steps
NOVA_COMPLETION_TIMEOUT = 800.0    # live_migration_completion_timeout: seconds per GiB; 0 = none
NOVA_TIMEOUT_ACTION = "abort"      # live_migration_timeout_action
NOVA_PERMIT_POST_COPY = False      # live_migration_permit_post_copy

# The least values those options accept.
NOVA_DOWNTIME_MIN_MS = 100
NOVA_DOWNTIME_STEPS_MIN = 3
NOVA_DOWNTIME_DELAY_MIN = 3.0

NOVA_MIN_DATA_GIB = 2.0            # _live_migration_data_gb counts RAM, and each disk, as 2 GiB at least
TIMEOUT_ACTIONS = ("abort", "force_complete")

# labmig's non-convergence rule (not Nova's, not QEMU's).
STALL_MIN_PROGRESS = 0.05          # a pass must leave 5 % less than the best so far to count as progress
STALL_PASSES = 5                   # passes in a row without progress ...
STALL_SECONDS = 10.0               # ... over at least this long


@dataclass(frozen=True)
class NovaSettings:
    """Nova's timers for one run, in Nova's units: ms, a count, seconds per GiB of data."""

    downtime_ms: int = NOVA_DOWNTIME_MS
    downtime_steps: int = NOVA_DOWNTIME_STEPS
    downtime_delay: float = NOVA_DOWNTIME_DELAY
    completion_timeout: float = NOVA_COMPLETION_TIMEOUT

    def __post_init__(self) -> None:
        if self.downtime_ms < NOVA_DOWNTIME_MIN_MS:
            raise InvalidInput(f"live_migration_downtime = {self.downtime_ms} ms is below Nova's minimum "
                               f"of {NOVA_DOWNTIME_MIN_MS} ms", f"give {NOVA_DOWNTIME_MIN_MS} ms or more")
        if self.downtime_steps < NOVA_DOWNTIME_STEPS_MIN:
            raise InvalidInput(f"live_migration_downtime_steps = {self.downtime_steps} is below Nova's "
                               f"minimum of {NOVA_DOWNTIME_STEPS_MIN}", f"give {NOVA_DOWNTIME_STEPS_MIN} or more")
        if not self.downtime_delay >= NOVA_DOWNTIME_DELAY_MIN:
            raise InvalidInput(f"live_migration_downtime_delay = {self.downtime_delay} s per GiB is below "
                               f"Nova's minimum of {NOVA_DOWNTIME_DELAY_MIN:g} s",
                               f"give {NOVA_DOWNTIME_DELAY_MIN:g} s per GiB or more")
        if not self.completion_timeout >= 0:
            raise InvalidInput(f"live_migration_completion_timeout = {self.completion_timeout} s per GiB "
                               "cannot be negative", "give 0 (no timeout) or more seconds per GiB")


def check_timeout_action(action: str) -> str:
    """``action`` if it is one of Nova's live_migration_timeout_action values, else InvalidInput."""
    if action not in TIMEOUT_ACTIONS:
        raise InvalidInput(f"unknown live_migration_timeout_action {action!r}",
                           f"use one of {', '.join(TIMEOUT_ACTIONS)}")
    return action


def data_gib(memory_bytes: int, disk_bytes: Iterable[int] = ()) -> float:
    """The data size Nova scales its timers by: RAM + each copied disk, each at least 2 GiB.

    ``disk_bytes`` are the disks a block migration copies (none on shared storage).
    """
    total = max(memory_bytes / GiB, NOVA_MIN_DATA_GIB)
    for size in disk_bytes:
        total += max(size / GiB, NOVA_MIN_DATA_GIB)
    return total


def downtime_steps(settings: NovaSettings, size_gib: float) -> list[tuple[int, int]]:
    """(seconds after the start, downtime limit in ms), ``downtime_steps + 1`` of them.

    A linear ramp from downtime/steps to downtime, one step every ``downtime_delay × size_gib``
    seconds; Nova truncates the delay and each limit to whole numbers.
    """
    delay = int(settings.downtime_delay * size_gib)
    base = settings.downtime_ms / settings.downtime_steps
    offset = (settings.downtime_ms - base) / settings.downtime_steps
    return [(int(delay * i), int(base + offset * i)) for i in range(settings.downtime_steps + 1)]


def downtime_at(steps: Sequence[tuple[int, int]], elapsed: float) -> int | None:
    """The limit (ms) Nova has set after ``elapsed`` seconds: the last step strictly passed, or None."""
    limit = None
    for at, downtime_ms in steps:
        if elapsed > at:
            limit = downtime_ms
    return limit


def completion_timeout(settings: NovaSettings, size_gib: float) -> int:
    """Seconds after which the timeout action is taken; 0 means never."""
    return int(settings.completion_timeout * size_gib)


def should_trigger_timeout_action(elapsed: float, timeout: float, in_postcopy: bool) -> bool:
    """True once ``elapsed`` is past a non-zero ``timeout``, unless post-copy already runs."""
    if not timeout or in_postcopy:
        return False
    return elapsed > timeout


def timeout_outcome(action: str, postcopy_enabled: bool) -> str:
    """What the timeout action does: "abort", "postcopy" (force_complete, post-copy
    enabled) or "pause" (force_complete without post-copy: the paused guest completes)."""
    if check_timeout_action(action) == "abort":
        return "abort"
    return "postcopy" if postcopy_enabled else "pause"


@dataclass(frozen=True)
class StallRule:
    """labmig's "not converging": no ``min_progress`` gain on the best pending volume for
    ``passes`` passes in a row lasting ``seconds`` or more (short passes near the end,
    when QEMU syncs often, do not count as a stall on their own)."""

    min_progress: float = STALL_MIN_PROGRESS
    passes: int = STALL_PASSES
    seconds: float = STALL_SECONDS

    def __post_init__(self) -> None:
        if not 0 <= self.min_progress < 1 or self.passes < 1 or self.seconds < 0:
            raise InvalidInput("the stall rule needs 0 <= min_progress < 1, passes >= 1 and seconds >= 0",
                               f"e.g. min_progress={STALL_MIN_PROGRESS} passes={STALL_PASSES} "
                               f"seconds={STALL_SECONDS:g}")


class StallTracker:
    """Applies a StallRule to the pending volume seen at each bitmap sync (one per pass).

    ``observe(pending, now)`` returns "stalled" when the rule starts to hold, "converging"
    when a stalled run makes progress again, else None; ``stalled`` is the current verdict.
    """

    def __init__(self, rule: StallRule | None = None) -> None:
        self.rule = rule or StallRule()
        self.best = math.inf
        self.best_at = 0.0
        self.passes_without_progress = 0
        self.stalled = False

    def observe(self, pending: float, now: float) -> str | None:
        if pending <= 0 or pending < (1.0 - self.rule.min_progress) * self.best:
            self.best, self.best_at, self.passes_without_progress = pending, now, 0
        else:
            self.passes_without_progress += 1
        holds = (self.passes_without_progress >= self.rule.passes
                 and now - self.best_at >= self.rule.seconds)
        if holds and not self.stalled:
            self.stalled = True
            log.debug("stalled: %d passes since the best (%.0f) at %.1f s", self.passes_without_progress,
                      self.best, self.best_at)
            return "stalled"
        if self.stalled and self.passes_without_progress == 0:
            self.stalled = False
            return "converging"
        return None
