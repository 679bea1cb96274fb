"""Policies and the convergence tracker, driven by synthetic samples and a recording Control."""
import pytest

from labmig.errors import InvalidInput
from labmig.live.plan import LiveOptions
from labmig.live.policies import POLICIES, ConvergenceTracker, JobSample, NovaPolicy, make_policy

MiB, GiB = 2**20, 2**30


class Recorder:
    def __init__(self):
        self.calls = []

    def set_max_downtime(self, seconds):
        self.calls.append(("downtime", round(seconds, 6)))

    def set_bandwidth(self, rate):
        self.calls.append(("bandwidth", rate))

    def start_postcopy(self, reason):
        self.calls.append(("postcopy", reason))

    def pause_guest(self, reason):
        self.calls.append(("pause", reason))

    def abort(self, reason, by_user=True):
        self.calls.append(("abort", reason))

    def note(self, kind, message):
        self.calls.append(("note", kind))

    def kinds(self):
        return [c[0] if c[0] != "note" else f"note:{c[1]}" for c in self.calls]


def test_nova_policy_raises_downtime_in_steps_then_aborts_on_timeout():
    """Nova (driver.py _live_migration_data_gb) counts a 0.25 GiB guest as 2 GiB: a step
    every 75 × 2 = 150 s (migration.py downtime_steps: 50, 95, 140 … ms), each set once
    ``elapsed`` is strictly past it (update_downtime), and the abort after 800 × 2 = 1600 s."""
    opts = LiveOptions(max_downtime="500ms")
    policy = NovaPolicy(opts, GiB // 4)
    assert policy.completion_timeout == 1600
    ctl = Recorder()
    policy.start(ctl)
    assert ctl.calls == []                      # Nova sets the first step at its first poll
    for t in (0.5, 100, 150, 150.5, 300, 301):
        policy.step(ctl, JobSample(elapsed=t, iteration=1, memory_remaining=10 * MiB))
    downtimes = [c[1] for c in ctl.calls if c[0] == "downtime"]
    assert downtimes == [0.05, 0.095, 0.14]
    policy.step(ctl, JobSample(elapsed=1600, iteration=2, memory_remaining=10 * MiB))
    assert "abort" not in ctl.kinds()
    policy.step(ctl, JobSample(elapsed=1601, iteration=2, memory_remaining=10 * MiB))
    assert ctl.calls[-1][0] == "abort" and "completion timeout" in ctl.calls[-1][1]
    policy.step(ctl, JobSample(elapsed=1602, iteration=2, memory_remaining=10 * MiB))
    assert [c[0] for c in ctl.calls].count("abort") == 1


def test_nova_policy_refuses_a_max_downtime_below_novas_minimum():
    with pytest.raises(InvalidInput) as err:
        make_policy(LiveOptions(max_downtime="50ms"), 64 * MiB)
    assert "100 ms" in err.value.message and "--policy wait" in err.value.hint


@pytest.mark.parametrize("postcopy, action, expected", [
    ("on-timeout", None, "postcopy"),            # --postcopy on-timeout alone forces completion
    ("on-timeout", "force-complete", "postcopy"),
    ("off", "force-complete", "pause"),
    ("on-timeout", "abort", "abort"),            # Nova: abort is abort, post-copy permitted or not
    ("off", None, "abort"),
])
def test_timeout_action_follows_nova(postcopy, action, expected):
    """migration.py run_tasks: force-complete switches to post-copy when it is enabled, else
    pauses the guest; driver.py _live_migration_monitor aborts on "abort"."""
    ctl = Recorder()
    policy = make_policy(LiveOptions(completion_timeout=5, timeout_action=action, postcopy=postcopy), 64 * MiB)
    policy.step(ctl, JobSample(elapsed=6, iteration=3))
    assert ctl.calls[-1][0] == expected


def test_postcopy_after_n_passes():
    ctl = Recorder()
    policy = make_policy(LiveOptions(policy="wait", postcopy="after:2"), 64 * MiB)
    for it in (1, 2):
        policy.step(ctl, JobSample(elapsed=it, iteration=it))
    assert "postcopy" not in ctl.kinds()
    policy.step(ctl, JobSample(elapsed=3, iteration=3))
    policy.step(ctl, JobSample(elapsed=4, iteration=4))
    assert ctl.kinds().count("postcopy") == 1


def test_no_timeout_action_once_in_postcopy():
    ctl = Recorder()
    policy = make_policy(LiveOptions(policy="wait", postcopy="now", completion_timeout=1), 64 * MiB)
    policy.step(ctl, JobSample(elapsed=0.5, iteration=1))
    policy.step(ctl, JobSample(elapsed=5, iteration=1))
    assert ctl.kinds() == ["postcopy"]


def stalled_run(remaining_per_pass, seconds_per_pass=3.0):
    return [JobSample(elapsed=i * seconds_per_pass, iteration=i + 1, memory_remaining=r,
                      dirty_rate=40 * MiB, memory_bps=8 * MiB)
            for i, r in enumerate(remaining_per_pass)]


def test_tracker_sees_a_stall_and_a_recovery():
    """labmig.nova.StallRule: best 30 at pass 2 (t = 3 s); 29 is not 5 % below it; the fifth
    pass without progress (pass 7, t = 18 s, 15 s after the best) is the stall; 10 recovers."""
    tracker = ConvergenceTracker()
    verdicts = [tracker.update(s) for s in stalled_run([64, 30, 30, 29, 29, 29, 29, 10, 2])]
    assert verdicts == [None, None, None, None, None, None, "stalled", "converging", None]


def test_tracker_waits_for_the_stall_to_last_ten_seconds():
    """Five passes without progress are not a stall while they last under 10 s (QEMU syncs
    often near the end); the sixth, 10.5 s after the best, is."""
    tracker = ConvergenceTracker()
    verdicts = [tracker.update(s) for s in stalled_run([64, 30, 30, 30, 30, 30, 30, 30], 1.75)]
    assert verdicts == [None] * 7 + ["stalled"]


def test_tracker_quiet_when_converging():
    tracker = ConvergenceTracker()
    assert all(tracker.update(s) is None for s in stalled_run([64, 32, 16, 8, 4, 2, 1]))


def test_tracker_ignores_repeated_samples_of_one_pass():
    tracker = ConvergenceTracker()
    samples = stalled_run([64, 30, 30])
    for s in samples + samples[-1:] * 5:
        assert tracker.update(s) is None


def test_postcopy_on_stall_switches_once_and_says_why():
    ctl = Recorder()
    policy = make_policy(LiveOptions(policy="postcopy-on-stall"), 64 * MiB)
    for s in stalled_run([64, 30, 30, 30, 30, 30, 30, 30, 30]):
        policy.step(ctl, s)
    assert ctl.kinds().count("note:not-converging") == 1
    assert ctl.kinds().count("postcopy") == 1
    assert ctl.kinds().index("note:not-converging") < ctl.kinds().index("postcopy")


def test_explanation_names_rates():
    text = ConvergenceTracker.explain(stalled_run([30])[0])
    assert "not converging" in text and "Mbit/s" in text


def test_job_sample_from_libvirt_stats():
    stats = {"type": 2, "time_elapsed": 1500, "memory_iteration": 3, "memory_total": 64 * MiB,
             "memory_processed": 80 * MiB, "memory_remaining": 5 * MiB, "memory_bps": 1e7,
             "memory_dirty_rate": 1000, "memory_page_size": 4096, "downtime": 120,
             "auto_converge_throttle": 40}
    s = JobSample.from_stats(stats)
    assert s.elapsed == 1.5 and s.iteration == 3 and s.dirty_rate == 4096000
    assert s.expected_downtime == pytest.approx(0.12) and s.throttle_pct == 40 and s.active
    assert not JobSample.from_stats({"type": 0}).active


def test_registry_and_unknown_policy():
    assert {"nova", "wait", "postcopy-on-stall"} <= set(POLICIES)
    with pytest.raises(InvalidInput) as err:
        make_policy(LiveOptions(policy="nope"), 1)
    assert "nova" in err.value.hint
