"""Policies: who decides, while QEMU copies, when to raise downtime, switch or give up.

    JobSample           one reading of libvirt's job statistics, in labmig units
    ConvergenceTracker  watches pass after pass and says when a pre-copy stops converging
    Control             what a policy may do to a running migration (the backend implements it)
    Policy              base class: applies the generic options (post-copy now / after N passes)
    NovaPolicy          OpenStack Nova's monitor: downtime raised in steps, completion timeout
                        scaled by the data size, then abort or force-complete
    WaitPolicy          let QEMU run with a fixed max downtime; abort only on the timeout
    PostcopyOnStallPolicy  switch to post-copy as soon as pre-copy is seen not to converge
    POLICIES            registry name → class, feeds the CLI's --policy choices

Everything here is pure logic over samples and is unit tested with a recording
Control; :mod:`labmig.live.migration` drives it with real samples.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Protocol

from ..errors import InvalidInput
from ..units import format_duration, format_rate, format_size
from .plan import LiveOptions

log = logging.getLogger(__name__)

GiB = 2**30

# Nova's defaults ([libvirt] section of nova.conf).
NOVA_DOWNTIME = 0.5            # live_migration_downtime, 500 ms
NOVA_DOWNTIME_STEPS = 10       # live_migration_downtime_steps
NOVA_DOWNTIME_DELAY = 75.0     # live_migration_downtime_delay, seconds per GiB
NOVA_COMPLETION_TIMEOUT = 800.0  # live_migration_completion_timeout, seconds per GiB
WAIT_DEFAULT_TIMEOUT = 300.0


@dataclass
class JobSample:
    """One poll of a running migration job (libvirt ``jobStats``), in bytes, bytes/s, seconds."""

    elapsed: float = 0.0
    iteration: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_bps: float = 0.0
    dirty_rate: float = 0.0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    data_processed: int = 0
    expected_downtime: float | None = None
    throttle_pct: float = 0.0
    postcopy_requests: int = 0
    active: bool = True

    @classmethod
    def from_stats(cls, stats: dict) -> "JobSample":
        """Build from the dict ``virDomain.jobStats()`` returns (keys as libvirt names them)."""
        page = int(stats.get("memory_page_size", 4096) or 4096)
        downtime_ms = stats.get("downtime")
        return cls(
            elapsed=float(stats.get("time_elapsed", 0)) / 1000.0,
            iteration=int(stats.get("memory_iteration", 0)),
            memory_total=int(stats.get("memory_total", 0)),
            memory_processed=int(stats.get("memory_processed", 0)),
            memory_remaining=int(stats.get("memory_remaining", 0)),
            memory_bps=float(stats.get("memory_bps", 0)),
            dirty_rate=float(stats.get("memory_dirty_rate", 0)) * page,
            disk_total=int(stats.get("disk_total", 0)),
            disk_processed=int(stats.get("disk_processed", 0)),
            disk_remaining=int(stats.get("disk_remaining", 0)),
            data_processed=int(stats.get("data_processed", 0)),
            expected_downtime=None if downtime_ms is None else float(downtime_ms) / 1000.0,
            throttle_pct=float(stats.get("auto_converge_throttle", 0)),
            postcopy_requests=int(stats.get("memory_postcopy_requests", 0)),
            active=int(stats.get("type", 1)) != 0,
        )


class ConvergenceTracker:
    """Says when pre-copy stops converging, and when it converges again.

    A pass must send what the guest dirtied during the previous one. If, for
    ``patience`` passes in a row, what is left at the start of a pass is not at
    least ``min_progress`` smaller than at the start of the pass before, the
    guest dirties memory as fast as the link sends it: more passes will not help.
    (Nova once used the same 10 % rule to decide on post-copy.)
    """

    def __init__(self, patience: int = 2, min_progress: float = 0.10) -> None:
        self.patience = patience
        self.min_progress = min_progress
        self.pass_start_remaining: dict[int, int] = {}
        self.stalled_passes = 0
        self.stalled = False
        self._last_iteration = -1

    def update(self, sample: JobSample) -> str | None:
        """Feed a sample; returns "stalled" or "converging" when the verdict changes."""
        if sample.iteration == self._last_iteration or sample.iteration < 1:
            return None
        self._last_iteration = sample.iteration
        self.pass_start_remaining[sample.iteration] = sample.memory_remaining
        before = self.pass_start_remaining.get(sample.iteration - 1)
        if before is None or sample.iteration < 3:
            return None
        if sample.memory_remaining > before * (1.0 - self.min_progress):
            self.stalled_passes += 1
        else:
            self.stalled_passes = 0
        if not self.stalled and self.stalled_passes >= self.patience:
            self.stalled = True
            return "stalled"
        if self.stalled and self.stalled_passes == 0:
            self.stalled = False
            return "converging"
        return None

    @staticmethod
    def explain(sample: JobSample) -> str:
        return (f"pre-copy is not converging: pass {sample.iteration} starts with "
                f"{format_size(sample.memory_remaining)} left, no less than the pass before; "
                f"the guest dirties {format_rate(sample.dirty_rate)} while the link sends "
                f"{format_rate(sample.memory_bps)}. Raise the bandwidth, enable auto-converge "
                f"or switch to post-copy")


class Control(Protocol):
    """What a policy may do to the running migration."""

    def set_max_downtime(self, seconds: float) -> None: ...
    def set_bandwidth(self, bytes_per_s: float) -> None: ...
    def start_postcopy(self, reason: str) -> None: ...
    def pause_guest(self, reason: str) -> None: ...
    def abort(self, reason: str, by_user: bool = True) -> None: ...
    def note(self, kind: str, message: str) -> None: ...


def downtime_steps(data_bytes: int, max_downtime: float = NOVA_DOWNTIME,
                   steps: int = NOVA_DOWNTIME_STEPS,
                   delay_per_gib: float = NOVA_DOWNTIME_DELAY) -> Iterator[tuple[float, float]]:
    """Nova's linear ramp: (elapsed seconds, max downtime seconds) pairs.

    Starts at max_downtime/steps and reaches max_downtime after ``steps``
    intervals of ``delay_per_gib`` seconds per GiB of data to move.
    """
    delay = delay_per_gib * data_bytes / GiB
    base = max_downtime / steps
    offset = (max_downtime - base) / steps
    for i in range(steps + 1):
        yield (delay * i, base + offset * i)


class Policy:
    """Base policy: applies the post-copy option; subclasses add their own rules."""

    name = "base"
    description = ""

    def __init__(self, options: LiveOptions, data_bytes: int) -> None:
        self.options = options
        self.data_bytes = max(int(data_bytes), 1)
        self.tracker = ConvergenceTracker()
        self.postcopy_started = False
        self.finished_action: str | None = None   # "abort", "force-complete" once taken

    @property
    def completion_timeout(self) -> float | None:
        return self.options.completion_timeout

    def start(self, ctl: Control) -> None:
        if self.options.max_downtime is not None:
            ctl.set_max_downtime(self.options.max_downtime)

    def step(self, ctl: Control, sample: JobSample) -> None:
        verdict = self.tracker.update(sample)
        if verdict == "stalled":
            ctl.note("not-converging", ConvergenceTracker.explain(sample))
            self.on_stall(ctl, sample)
        elif verdict == "converging":
            ctl.note("converging", f"pre-copy converges again at pass {sample.iteration} "
                     f"({format_size(sample.memory_remaining)} left)")
        mode = self.options.postcopy
        if not self.postcopy_started and sample.iteration >= 1:
            if mode.kind == "now":
                self._postcopy(ctl, "post-copy requested from the start")
            elif mode.kind == "after" and sample.iteration > mode.passes:
                self._postcopy(ctl, f"post-copy after {mode.passes} pre-copy pass(es)")
        timeout = self.completion_timeout
        if timeout and self.finished_action is None and not self.postcopy_started \
                and sample.elapsed > timeout:
            self.on_timeout(ctl, sample, timeout)

    def on_stall(self, ctl: Control, sample: JobSample) -> None:
        """Called once each time pre-copy is found not converging."""

    def on_timeout(self, ctl: Control, sample: JobSample, timeout: float) -> None:
        action = self.options.timeout_action
        if action == "force-complete" or self.options.postcopy.kind == "on-timeout":
            self.finished_action = "force-complete"
            if self.options.postcopy.enabled:
                self._postcopy(ctl, f"not done after {format_duration(timeout)}: forcing completion with post-copy")
            else:
                ctl.pause_guest(f"not done after {format_duration(timeout)}: pausing the guest to force completion")
        else:
            self.finished_action = "abort"
            ctl.abort(f"not done after {format_duration(timeout)} (completion timeout): aborting", by_user=False)

    def _postcopy(self, ctl: Control, reason: str) -> None:
        self.postcopy_started = True
        ctl.start_postcopy(reason)


class NovaPolicy(Policy):
    name = "nova"
    description = ("Nova's monitor: max downtime raised in 10 steps (75 s per GiB apart) up to "
                   "500 ms or --max-downtime; after 800 s per GiB, abort or force-complete")

    def __init__(self, options: LiveOptions, data_bytes: int) -> None:
        super().__init__(options, data_bytes)
        target = options.max_downtime if options.max_downtime is not None else NOVA_DOWNTIME
        self.steps = list(downtime_steps(self.data_bytes, target))
        self.current_downtime: float | None = None

    @property
    def completion_timeout(self) -> float:
        if self.options.completion_timeout is not None:
            return self.options.completion_timeout
        return NOVA_COMPLETION_TIMEOUT * self.data_bytes / GiB

    def start(self, ctl: Control) -> None:
        self._update_downtime(ctl, 0.0)

    def step(self, ctl: Control, sample: JobSample) -> None:
        self._update_downtime(ctl, sample.elapsed)
        super().step(ctl, sample)

    def _update_downtime(self, ctl: Control, elapsed: float) -> None:
        wanted = None
        for at, downtime in self.steps:
            if elapsed >= at:
                wanted = downtime
        if wanted is not None and wanted != self.current_downtime:
            self.current_downtime = wanted
            ctl.set_max_downtime(wanted)


class WaitPolicy(Policy):
    name = "wait"
    description = "QEMU alone with a fixed max downtime; abort only after the completion timeout (300 s)"

    @property
    def completion_timeout(self) -> float:
        if self.options.completion_timeout is not None:
            return self.options.completion_timeout
        return WAIT_DEFAULT_TIMEOUT


class PostcopyOnStallPolicy(NovaPolicy):
    name = "postcopy-on-stall"
    description = "Nova's downtime steps, and a switch to post-copy as soon as pre-copy stops converging"
    needs_postcopy = True

    def on_stall(self, ctl: Control, sample: JobSample) -> None:
        if not self.postcopy_started:
            self._postcopy(ctl, "pre-copy does not converge: switching to post-copy")


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (NovaPolicy, WaitPolicy, PostcopyOnStallPolicy)
}


def make_policy(options: LiveOptions, data_bytes: int) -> Policy:
    try:
        cls = POLICIES[options.policy]
    except KeyError:
        raise InvalidInput(f"unknown policy {options.policy!r}",
                           f"use one of {', '.join(sorted(POLICIES))}") from None
    return cls(options, data_bytes)
