"""Nova's live-migration rules (labmig.nova) on one table of cases, checked three ways:
the pure functions, the simulator's hybrid strategy under ``nova_policy``, and the live
NovaPolicy driven by job samples and a recording Control.

Where each expected value comes from (Nova, nova/virt/libvirt/):

- data size, driver.py ``LibvirtDriver._live_migration_data_gb``: RAM in GiB, at least 2,
  plus each copied disk in GiB, each at least 2.
- steps, migration.py ``downtime_steps``: delay = int(downtime_delay × data size);
  base = downtime / steps; offset = (downtime - base) / steps; step i (0..steps) is
  (int(delay × i), int(base + offset × i)).
- the limit in force, migration.py ``update_downtime``: the last step whose time the
  elapsed time is strictly past.
- timeout, driver.py ``_live_migration_monitor``: int(completion_timeout × data size);
  migration.py ``should_trigger_timeout_action``: once elapsed > timeout, never when the
  timeout is 0 or post-copy already runs.
- the action: "abort" aborts the job; "force_complete" (``live_migration_force_complete``,
  then migration.py ``run_tasks``) switches to post-copy when it is enabled, else pauses.
- minimums, nova/conf/libvirt.py (``min=``): downtime 100 ms, 3 steps, 3 s per GiB; lower
  values are refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from labmig import nova
from labmig.errors import InvalidInput
from labmig.live.plan import LiveOptions
from labmig.live.policies import JobSample, NovaPolicy
from labmig.model import Outcome
from labmig.sim.plan import VM, Link, Plan, Storage, Workload
from labmig.strategies import make_strategy

MiB, GiB = 1 << 20, 1 << 30


@dataclass(frozen=True)
class Case:
    name: str
    memory: int
    disks: tuple[int, ...]              # disks a block migration copies (none: shared storage)
    settings: nova.NovaSettings
    action: str
    postcopy_permitted: bool
    size_gib: float                     # expected data size
    steps: list[tuple[int, int]]        # expected (s, ms)
    timeout: int                        # expected seconds, 0 = none
    outcome: str | None                 # expected: "abort", "postcopy", "pause"; None = no action


S = nova.NovaSettings
CASES = [
    # 256 MiB counts as 2 GiB. delay int(3 × 2) = 6; base 500/10 = 50, offset 45;
    # timeout int(20 × 2) = 40; abort.
    Case("small guest counts as 2 GiB", 256 * MiB, (), S(500, 10, 3, 20), "abort", True,
         2.0, [(6 * i, 50 + 45 * i) for i in range(11)], 40, "abort"),
    # Nova's docstring example: 3 GiB, 400 ms, 10 steps, 30 s per GiB: +36 ms every 90 s
    # from 40 ms; timeout int(60 × 3) = 180; force_complete with post-copy enabled.
    Case("Nova's documented example", 3 * GiB, (), S(400, 10, 30, 60), "force_complete", True,
         3.0, [(90 * i, 40 + 36 * i) for i in range(11)], 180, "postcopy"),
    # Nova's minimums, 1 GiB RAM + a 1 GiB disk: 2 + 2 = 4 GiB. delay int(3 × 4) = 12;
    # base 100/3 = 33.3, offset 22.2: 33, 55, 77, 100 ms; timeout int(5 × 4) = 20.
    Case("minimums, a disk floored too", 1 * GiB, (1 * GiB,), S(100, 3, 3, 5), "force_complete", True,
         4.0, [(0, 33), (12, 55), (24, 77), (36, 100)], 20, "postcopy"),
    # 2.5 GiB: delay int(4.5 × 2.5) = int(11.25) = 11; base 500/4 = 125, offset 93.75:
    # 125, 218, 312, 406, 500 ms; timeout int(9.5 × 2.5) = int(23.75) = 23;
    # force_complete without post-copy: pause.
    Case("fractional size, no post-copy", 5 * GiB // 2, (), S(500, 4, 4.5, 9.5), "force_complete", False,
         2.5, [(0, 125), (11, 218), (22, 312), (33, 406), (44, 500)], 23, "pause"),
    # 512 MiB counts as 2 GiB; timeout int(0.4 × 2) = int(0.8) = 0: no timeout at all.
    Case("timeout truncated to none", 512 * MiB, (), S(500, 10, 3, 0.4), "abort", False,
         2.0, [(6 * i, 50 + 45 * i) for i in range(11)], 0, None),
]
IDS = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pure_rules(case: Case) -> None:
    size = nova.data_gib(case.memory, case.disks)
    assert size == case.size_gib
    steps = nova.downtime_steps(case.settings, size)
    assert steps == case.steps
    assert nova.completion_timeout(case.settings, size) == case.timeout
    first_at, first_ms = steps[0]
    assert nova.downtime_at(steps, first_at) is None                  # strictly past, not at
    assert nova.downtime_at(steps, first_at + 0.1) == first_ms
    assert nova.downtime_at(steps, steps[-1][0] + 1) == steps[-1][1]
    if case.timeout:
        assert not nova.should_trigger_timeout_action(case.timeout, case.timeout, in_postcopy=False)
        assert nova.should_trigger_timeout_action(case.timeout + 0.1, case.timeout, in_postcopy=False)
        assert not nova.should_trigger_timeout_action(case.timeout + 0.1, case.timeout, in_postcopy=True)
        assert nova.timeout_outcome(case.action, case.postcopy_permitted) == case.outcome
    else:
        assert not nova.should_trigger_timeout_action(1e9, case.timeout, in_postcopy=False)


class Recorder:
    """A Control that notes what the policy did, and when (``now``, set by the test)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.downtimes: list[tuple[float, int]] = []
        self.actions: list[tuple[float, str]] = []

    def set_max_downtime(self, seconds: float) -> None:
        self.downtimes.append((self.now, round(seconds * 1000)))

    def set_bandwidth(self, bytes_per_s: float) -> None:
        raise AssertionError("Nova's policy never changes the bandwidth")

    def start_postcopy(self, reason: str) -> None:
        self.actions.append((self.now, "postcopy"))

    def pause_guest(self, reason: str) -> None:
        self.actions.append((self.now, "pause"))

    def abort(self, reason: str, by_user: bool = True) -> None:
        self.actions.append((self.now, "abort"))

    def note(self, kind: str, message: str) -> None:
        pass


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_live_nova_policy(case: Case) -> None:
    """Polled every 0.5 s, the policy sets each step at the first poll past its time, and
    takes the action once, at the first poll past the timeout."""
    options = LiveOptions(policy="nova", nova=case.settings, timeout_action=case.action.replace("_", "-"),
                          postcopy="on-timeout" if case.postcopy_permitted else "off")
    policy = NovaPolicy(options, case.memory + sum(case.disks), case.disks)
    ctl = Recorder()
    policy.start(ctl)
    end = (case.timeout or case.steps[-1][0]) + 5
    for tick in range(1, int(end * 2) + 1):
        ctl.now = tick / 2
        policy.step(ctl, JobSample(elapsed=ctl.now, iteration=1, memory_remaining=64 * MiB))
    before_timeout = [(at + 0.5, ms) for at, ms in case.steps if not case.timeout or at < case.timeout]
    assert [d for d in ctl.downtimes if not case.timeout or d[0] <= case.timeout] == before_timeout
    expected = [(case.timeout + 0.5, case.outcome)] if case.outcome else []
    assert ctl.actions == expected


def nonconverging_plan(case: Case) -> Plan:
    """A guest that dirties its working set twice as fast as the link moves it: pre-copy
    never converges, so only Nova's timeout ends the run (or max_time, when there is none)."""
    link = 256 * MiB
    workload = Workload(kind="uniform", dirty_rate=2 * link, wss=case.memory // 2)
    vm = VM(memory=case.memory, disk_size=sum(case.disks) or 1 * GiB)
    return Plan(vm=vm, workload=workload, link=Link(link), storage=Storage(shared=not case.disks),
                max_time=case.steps[-1][0] + 5.0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_simulated_hybrid_under_nova(case: Case) -> None:
    """The simulator schedules the same steps from the start (each in force from its time on)
    and takes the same action at the timeout."""
    options = {"nova_policy": True, "live_migration_downtime": case.settings.downtime_ms,
               "live_migration_downtime_steps": case.settings.downtime_steps,
               "live_migration_downtime_delay": case.settings.downtime_delay,
               "live_migration_completion_timeout": case.settings.completion_timeout,
               "live_migration_timeout_action": case.action,
               "live_migration_permit_post_copy": case.postcopy_permitted}
    result = make_strategy("hybrid", options).simulate(nonconverging_plan(case))
    limits = [(e.t, int(re.search(r"(\d+) ms", e.message).group(1)))
              for e in result.events if e.kind == "downtime-limit"]
    expected_limits = [(float(at), ms) for at, ms in case.steps if not case.timeout or at < case.timeout]
    assert limits[:len(expected_limits)] == expected_limits
    timeouts = [e for e in result.events if e.kind == "completion-timeout"]
    kinds = [e.kind for e in result.events]
    if case.outcome is None:
        assert not timeouts and result.outcome == Outcome.DID_NOT_CONVERGE
        return
    assert [e.t for e in timeouts] == [case.timeout]
    assert timeouts[0].message.endswith(case.outcome)
    if case.outcome == "abort":
        assert result.outcome == Outcome.ABORTED and result.total_time == pytest.approx(case.timeout)
    elif case.outcome == "postcopy":
        assert result.completed and "postcopy-start" in kinds and result.postcopy_faults > 0
    else:
        assert result.completed and "postcopy-start" not in kinds and "paused by the completion timeout" in \
            result.message


@pytest.mark.parametrize("field, value, minimum", [
    ("downtime_ms", 99, "100 ms"), ("downtime_steps", 2, "3"), ("downtime_delay", 2.9, "3 s"),
    ("completion_timeout", -1.0, "negative"),
])
def test_values_nova_refuses(field: str, value: float, minimum: str) -> None:
    """nova/conf/libvirt.py: live_migration_downtime min=100, _steps min=3, _delay min=3,
    _completion_timeout min=0. Nova refuses lower values at start; so do both sides here."""
    with pytest.raises(InvalidInput) as err:
        S(**{field: value})
    assert minimum in err.value.message
    options = {"nova_policy": True, "live_migration_" + field.replace("_ms", ""): value}
    with pytest.raises(InvalidInput):
        make_strategy("hybrid", options)
    assert S(**{field: {"downtime_ms": 100, "downtime_steps": 3, "downtime_delay": 3.0,
                        "completion_timeout": 0.0}[field]})      # the minimum itself is accepted


def test_stall_rule_is_one_definition() -> None:
    """labmig's own rule (Nova and QEMU have none): the simulator's pre-copy options and
    the live tracker start from the same StallRule."""
    from labmig.live.policies import ConvergenceTracker
    from labmig.strategies.precopy import PrecopyOptions

    rule = nova.StallRule()
    assert (PrecopyOptions().stall_passes, PrecopyOptions().stall_time) == (rule.passes, rule.seconds)
    assert ConvergenceTracker().stall.rule == rule
    tracker = nova.StallTracker()
    # best 100 at t=0; 96 is not 5 % below it; five such passes over >= 10 s stall; 90 recovers.
    verdicts = [tracker.observe(p, t) for p, t in [(100, 0), (96, 2), (96, 4), (96, 6), (96, 8), (96, 10),
                                                   (90, 12)]]
    assert verdicts == [None, None, None, None, None, "stalled", "converging"]
