"""Policies: who decides, while QEMU copies, when to raise downtime, switch or give up.

    JobSample           one reading of libvirt's job statistics, in labmig units
    ConvergenceTracker  feeds each pass's first sample to labmig.nova's StallTracker: says
                        when a pre-copy stops converging, and when it converges again
    Control             what a policy may do to a running migration (the backend implements it)
    Policy              base class: applies the generic options (post-copy now / after N passes)
    NovaPolicy          OpenStack Nova's monitor, its rules from labmig.nova: downtime raised
                        in steps, completion timeout scaled by the data size, then abort or
                        force-complete
    WaitPolicy          let QEMU run with a fixed max downtime; abort only on the timeout
    PostcopyOnStallPolicy  switch to post-copy as soon as pre-copy is seen not to converge
    POLICIES            registry name → class, feeds the CLI's --policy choices

Everything here is pure logic over samples and is unit tested with a recording
Control; :mod:`labmig.live.migration` drives it with real samples. The rules
themselves (Nova's, and labmig's stall rule) live in :mod:`labmig.nova`, which the
simulator's strategies use too.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .. import nova
from ..errors import InvalidInput
from ..units import format_duration, format_rate, format_size
from .plan import LiveOptions

log = logging.getLogger(__name__)

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
    """labmig's stall rule (labmig.nova.StallRule) over job samples.

    QEMU starts a pass at each bitmap sync; what is left at the first sample of a pass is
    the pending volume the rule watches, the sample's elapsed time its clock. Repeated
    samples of one pass are ignored.
    """

    def __init__(self, rule: nova.StallRule | None = None) -> None:
        self.stall = nova.StallTracker(rule)
        self._last_iteration = -1

    @property
    def stalled(self) -> bool:
        return self.stall.stalled

    def update(self, sample: JobSample) -> str | None:
        """Feed a sample; returns "stalled" or "converging" when the verdict changes."""
        if sample.iteration == self._last_iteration or sample.iteration < 1:
            return None
        self._last_iteration = sample.iteration
        return self.stall.observe(sample.memory_remaining, sample.elapsed)

    @staticmethod
    def explain(sample: JobSample) -> str:
        return (f"pre-copy is not converging: pass {sample.iteration} starts with "
                f"{format_size(sample.memory_remaining)} left, and {nova.STALL_PASSES} passes in a row "
                f"left no less than {1 - nova.STALL_MIN_PROGRESS:.0%} of the least seen before; "
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


class Policy:
    """Base policy: applies the post-copy option; subclasses add their own rules."""

    name = "base"
    description = ""

    def __init__(self, options: LiveOptions, data_bytes: int, disk_bytes: Sequence[int] = ()) -> None:
        """``data_bytes``: RAM plus the disks a block migration copies; ``disk_bytes``: those disks."""
        self.options = options
        self.data_bytes = max(int(data_bytes), 1)
        self.disk_bytes = [int(size) for size in disk_bytes]
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
        if self.finished_action is None and timeout is not None \
                and nova.should_trigger_timeout_action(sample.elapsed, timeout, self.postcopy_started):
            self.on_timeout(ctl, sample, timeout)

    def on_stall(self, ctl: Control, sample: JobSample) -> None:
        """Called once each time pre-copy is found not converging."""

    @property
    def timeout_action(self) -> str:
        """Nova's name of the action: the option's, else force_complete with post-copy on-timeout."""
        action = self.options.timeout_action
        if action is None:
            action = "force-complete" if self.options.postcopy.kind == "on-timeout" else "abort"
        return action.replace("-", "_")

    def on_timeout(self, ctl: Control, sample: JobSample, timeout: float) -> None:
        outcome = nova.timeout_outcome(self.timeout_action, self.options.postcopy.enabled)
        if outcome == "abort":
            self.finished_action = "abort"
            ctl.abort(f"not done after {format_duration(timeout)} (completion timeout): aborting", by_user=False)
            return
        self.finished_action = "force-complete"
        if outcome == "postcopy":
            self._postcopy(ctl, f"not done after {format_duration(timeout)}: forcing completion with post-copy")
        else:
            ctl.pause_guest(f"not done after {format_duration(timeout)}: pausing the guest to force completion")

    def _postcopy(self, ctl: Control, reason: str) -> None:
        self.postcopy_started = True
        ctl.start_postcopy(reason)


class NovaPolicy(Policy):
    name = "nova"
    description = ("Nova's monitor: max downtime raised in 10 steps (75 s per GiB apart) up to "
                   "500 ms or --max-downtime; after 800 s per GiB, abort or force-complete")

    def __init__(self, options: LiveOptions, data_bytes: int, disk_bytes: Sequence[int] = ()) -> None:
        super().__init__(options, data_bytes, disk_bytes)
        settings = options.nova or nova.NovaSettings()
        if options.max_downtime is not None:
            if options.max_downtime * 1000 < nova.NOVA_DOWNTIME_MIN_MS:
                raise InvalidInput(f"max downtime {format_duration(options.max_downtime)} is below Nova's "
                                   f"least live_migration_downtime, {nova.NOVA_DOWNTIME_MIN_MS} ms",
                                   f"give {nova.NOVA_DOWNTIME_MIN_MS}ms or more, or use --policy wait")
            settings = replace(settings, downtime_ms=int(round(options.max_downtime * 1000)))
        self.settings = settings
        self.size_gib = nova.data_gib(self.data_bytes - sum(self.disk_bytes), self.disk_bytes)
        self.steps = nova.downtime_steps(settings, self.size_gib)
        self.current_downtime_ms: int | None = None

    @property
    def completion_timeout(self) -> float:
        if self.options.completion_timeout is not None:
            return self.options.completion_timeout
        return nova.completion_timeout(self.settings, self.size_gib)

    def start(self, ctl: Control) -> None:
        """Nothing yet: Nova sets the first step at its first poll after the start."""

    def step(self, ctl: Control, sample: JobSample) -> None:
        wanted = nova.downtime_at(self.steps, sample.elapsed)
        if wanted is not None and wanted != self.current_downtime_ms:
            self.current_downtime_ms = wanted
            ctl.set_max_downtime(wanted / 1000.0)
        super().step(ctl, sample)


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


def make_policy(options: LiveOptions, data_bytes: int, disk_bytes: Sequence[int] = ()) -> Policy:
    """The policy ``options.policy`` names; sizes as Policy takes them."""
    try:
        cls = POLICIES[options.policy]
    except KeyError:
        raise InvalidInput(f"unknown policy {options.policy!r}",
                           f"use one of {', '.join(sorted(POLICIES))}") from None
    return cls(options, data_bytes, disk_bytes)
