"""Policies and the convergence tracker, driven by synthetic samples and a recording Control."""
import pytest

from labmig.errors import InvalidInput
from labmig.live.plan import LiveOptions
from labmig.live.policies import (GiB, POLICIES, ConvergenceTracker, JobSample, NovaPolicy,
                                  downtime_steps, make_policy)

MiB = 2**20


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


def test_downtime_steps_match_novas_documented_example():
    # Nova's docstring: 10 steps, 30 s per GiB, 3 GiB, 400 ms → +36 ms every 90 s.
    steps = list(downtime_steps(3 * GiB, 0.4, 10, 30))
    assert len(steps) == 11
    assert steps[0] == (0, pytest.approx(0.040))
    assert steps[1] == (pytest.approx(90), pytest.approx(0.076))
    assert steps[-1] == (pytest.approx(900), pytest.approx(0.400))


def test_nova_policy_raises_downtime_in_steps_then_aborts_on_timeout():
    opts = LiveOptions(max_downtime="500ms")
    policy = NovaPolicy(opts, GiB // 4)          # 0.25 GiB: a step every 18.75 s, timeout 200 s
    assert policy.completion_timeout == pytest.approx(200)
    ctl = Recorder()
    policy.start(ctl)
    assert ctl.calls == [("downtime", 0.05)]
    for t in (1, 10, 19, 20, 38):
        policy.step(ctl, JobSample(elapsed=t, iteration=1, memory_remaining=10 * MiB))
    downtimes = [c[1] for c in ctl.calls if c[0] == "downtime"]
    assert downtimes == [0.05, 0.095, 0.14]
    policy.step(ctl, JobSample(elapsed=201, iteration=2, memory_remaining=10 * MiB))
    assert ctl.calls[-1][0] == "abort" and "completion timeout" in ctl.calls[-1][1]
    policy.step(ctl, JobSample(elapsed=202, iteration=2, memory_remaining=10 * MiB))
    assert [c[0] for c in ctl.calls].count("abort") == 1


def test_force_complete_uses_postcopy_when_allowed_else_pauses():
    for postcopy, expected in (("on-timeout", "postcopy"), ("off", "pause")):
        opts = LiveOptions(completion_timeout=5, timeout_action="force-complete" if postcopy == "off" else "abort",
                           postcopy=postcopy)
        ctl = Recorder()
        policy = make_policy(opts, 64 * MiB)
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


def stalled_run(remaining_per_pass):
    return [JobSample(elapsed=i, iteration=i + 1, memory_remaining=r, dirty_rate=40 * MiB, memory_bps=8 * MiB)
            for i, r in enumerate(remaining_per_pass)]


def test_tracker_sees_a_stall_and_a_recovery():
    tracker = ConvergenceTracker()
    verdicts = [tracker.update(s) for s in stalled_run([64, 30, 30, 29, 29, 10, 2])]
    assert verdicts == [None, None, None, "stalled", None, "converging", None]


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
    for s in stalled_run([64, 30, 30, 30, 30, 30]):
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
