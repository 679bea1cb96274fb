"""The widgets' controller driven without a notebook: runs, observers, abort, errors, tables."""
from __future__ import annotations

import threading
import time

import pytest

from labmig.errors import InvalidInput, LabmigError
from labmig.model import MigrationResult, Outcome, TimelinePoint
from labmig.widgets import backends, tables
from labmig.widgets.controller import MigrationController, MigrationParams, describe_point

MiB = 2**20


def synthetic_run(params: MigrationParams) -> MigrationResult:
    """Ten pre-copy passes then one stop-and-copy; figures chosen so totals are easy to check."""
    points = []
    sent = 0
    for i in range(10):
        sent += 60 * MiB
        points.append(TimelinePoint(t=0.5 * i, phase="precopy", iteration=i + 1, bytes_sent_total=sent,
                                    remaining_bytes=(10 - i) * 50 * MiB, bandwidth=120 * MiB, dirty_rate=30 * MiB))
    points.append(TimelinePoint(t=5.0, phase="stop-and-copy", iteration=11, bytes_sent_total=sent + 50 * MiB,
                                remaining_bytes=0, bandwidth=120 * MiB))
    return MigrationResult(kind=params.kind, strategy=params.strategy, backend="test", outcome=Outcome.COMPLETED,
                           total_time=5.0, downtime=0.4, vm=params.vm, source=params.source,
                           destination=params.destination, bytes_by_phase={"precopy": sent, "stop-and-copy": 50 * MiB},
                           iterations=11, timeline=points, message="converged after 10 passes")


class ReplayBackend(backends.SimulatorBackend):
    """The simulator backend's play-back with a fixed synthetic run instead of a simulation."""

    name = "test"

    def available(self):
        return True, "synthetic"

    def predict(self, params):
        return synthetic_run(params)


class HoldAfterThirdPoint(ReplayBackend):
    """Replays the synthetic run but waits after its third point until Abort is pressed.

    The abort then always lands in pre-copy, however slow the machine is (a timed replay let a
    loaded CI machine finish the run before the click arrived).
    """

    def run(self, params, on_point, abort):
        seen = []

        def hold(point):
            on_point(point)
            seen.append(point)
            if len(seen) == 3:
                assert abort.wait(30), "the test never pressed Abort"
        return super().run(params, hold, abort)


class BrokenBackend(ReplayBackend):
    def run(self, params, on_point, abort):
        on_point(synthetic_run(params).timeline[0])
        raise LabmigError("destination libvirtd went away", "restart it")


@pytest.fixture
def controller(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "test", ReplayBackend)
    monkeypatch.setitem(backends.BACKENDS, "broken", BrokenBackend)
    monkeypatch.setitem(backends.BACKENDS, "held", HoldAfterThirdPoint)
    monkeypatch.setitem(backends.BACKENDS, "simulator", ReplayBackend)  # predictions
    return MigrationController(backend="test", playback=0.0)


def test_run_feeds_every_point_to_observers_in_order(controller):
    events = []
    controller.observe(lambda event, run: events.append((event, len(run.points))))
    result = controller.migrate(timeout=10)
    expected = synthetic_run(controller.params)
    assert result == expected
    assert events[0] == ("start", 0)
    assert [e for e, _ in events[1:-1]] == ["point"] * len(expected.timeline)
    assert [n for _, n in events[1:-1]] == list(range(1, len(expected.timeline) + 1))
    assert events[-1] == ("done", len(expected.timeline))
    assert controller.results == [result]
    assert controller.current.prediction == expected


def test_run_does_not_block_the_caller(controller):
    controller.set(playback=2.0)
    t0 = time.monotonic()
    run = controller.start()
    assert time.monotonic() - t0 < 1.0
    assert run.running
    run.abort()
    run.wait(timeout=10)


def test_abort_before_switchover_leaves_vm_on_source(controller):
    controller.set(backend="held")
    seen = threading.Event()

    def abort_after_three_points(event, run):
        if event == "point" and len(run.points) == 3:
            seen.set()

    controller.observe(abort_after_three_points)
    run = controller.start()
    assert seen.wait(10)
    controller.abort()
    result = run.wait(timeout=10)
    assert result.outcome == Outcome.ABORTED
    assert result.destination == "lab2" and "runs on lab1" in tables.outcome_words(result)
    assert 3 <= len(result.timeline) < 10
    assert all(p.phase == "precopy" for p in result.timeline)
    assert result.downtime == 0.0
    assert result.total_time == result.timeline[-1].t
    assert result.bytes_total == result.timeline[-1].bytes_sent_total
    assert result.events[-1].kind == "abort"


def test_second_start_while_running_is_refused(controller):
    controller.set(playback=2.0)
    run = controller.start()
    with pytest.raises(InvalidInput, match="still running"):
        controller.start()
    run.abort()
    run.wait(10)
    controller.set(playback=0.0)
    assert controller.migrate(timeout=10).completed


def test_backend_error_is_kept_and_raised_by_wait(controller):
    run = controller.start(backend="broken")
    with pytest.raises(LabmigError, match="libvirtd went away"):
        run.wait(10)
    assert run.error.hint == "restart it"
    assert run.phase_text.startswith("failed:")
    assert controller.results == []


@pytest.mark.parametrize("changes, message", [
    ({"kind": "warp"}, "unknown migration kind"),
    ({"destination": "lab1"}, "source and destination"),
    ({"memory": "1GiB", "working_set": "2GiB"}, "larger than memory"),
    ({"link_rate": "fast"}, "cannot read rate"),
    ({"max_bandwidth": "fast"}, "cannot read rate"),
    ({"bandwidth": "1Gbit/s"}, "meant two things"),
    ({"backend": "nowhere"}, "unknown backend"),
])
def test_bad_parameters_are_refused_before_anything_starts(controller, changes, message):
    with pytest.raises(InvalidInput, match=message):
        controller.start(**changes)
    assert controller.runs == []


def test_unknown_parameter_names_the_valid_ones(controller):
    with pytest.raises(InvalidInput) as info:
        controller.set(bandwith="1Gbit/s")
    assert "bandwith" in str(info.value) and "link_rate" in info.value.hint and "max_bandwidth" in info.value.hint


def test_phase_words_say_what_the_vm_is_doing():
    p = TimelinePoint(t=1, phase="precopy", iteration=3, remaining_bytes=100 * MiB,
                      dirty_rate=10 * MiB, bandwidth=100 * MiB, throttle_pct=30)
    text = describe_point(p)
    assert "pre-copy pass 3" in text and "100.00 MiB left" in text and "throttled 30 %" in text
    assert "paused" in describe_point(TimelinePoint(t=2, phase="stop-and-copy"))
    assert "VM off" in describe_point(TimelinePoint(t=2, phase="disk"), "cold")


def test_result_table_shows_measured_and_predicted_figures():
    params = MigrationParams()
    measured = synthetic_run(params)
    predicted = synthetic_run(params)
    predicted.downtime = 0.25
    html = tables.result_table_html(measured, predicted)
    assert 'data-field="downtime" data-value="0.4"' in html
    assert 'data-field="predicted_downtime" data-value="0.25"' in html
    assert f'data-field="bytes_total" data-value="{measured.bytes_total}"' in html
    assert 'data-outcome="completed"' in html


def test_comparison_rows_take_the_latest_completed_run_of_each_kind():
    params = MigrationParams()
    live = synthetic_run(params)
    cold = synthetic_run(params.replace(kind="cold", strategy="cold"))
    cold.downtime = cold.total_time = 42.0
    failed_live = synthetic_run(params)
    failed_live.outcome = Outcome.ABORTED
    rows = dict((label, (l, c)) for label, l, c in tables.comparison_rows([live, cold, failed_live]))
    assert rows["downtime"] == ("400 ms", "42.00 s")
    assert rows["VM state during the migration"][1] == "powered off for the whole migration"
    assert dict((l, (a, b)) for l, a, b in tables.comparison_rows([live]))["downtime"][1] == "(no run yet)"


# -- the real simulator behind the controller -----------------------------------------------

def test_simulator_run_equals_the_plain_simulator_api():
    from labmig.sim.run import simulate

    controller = MigrationController(backend="simulator", playback=0.0)
    result = controller.migrate(timeout=60, memory="512MiB", dirty_rate="100MiB/s", working_set="256MiB")
    direct = simulate(controller.current.params.to_spec().to_plan())
    assert (result.downtime, result.total_time, result.bytes_total, result.iterations) == \
        (direct.downtime, direct.total_time, direct.bytes_total, direct.iterations)
    assert [p.t for p in controller.current.points] == [p.t for p in direct.timeline]
    assert (result.vm, result.source, result.destination) == ("labvm", "lab1", "lab2")
    assert controller.current.prediction.downtime == direct.downtime


def test_strategy_options_reach_the_simulator():
    controller = MigrationController(backend="simulator", playback=0.0, memory="1GiB", working_set="1GiB",
                                     dirty_rate="200MiB/s", link_rate="1Gbit/s")
    stuck = controller.migrate(timeout=60, strategy="precopy")
    rescued = controller.migrate(timeout=60, strategy="autoconverge", options={"cpu_throttle_initial": "30"})
    assert stuck.outcome == Outcome.DID_NOT_CONVERGE
    assert rescued.completed and rescued.max_throttle_pct >= 30


def test_simulated_run_can_be_aborted_midway():
    controller = MigrationController(backend="simulator", playback=2.0, dirty_rate="110MiB/s")
    run = controller.start()
    while len(run.points) < 2:
        time.sleep(0.01)
    run.abort()
    result = run.wait(30)
    assert result.outcome == Outcome.ABORTED and result.downtime == 0.0
    assert 2 <= len(result.timeline) < len(run.prediction.timeline)


def test_where_the_vm_is_comes_from_both_hosts_when_a_real_run_asked_them(controller):
    """A real run's result carries what both hosts said afterwards (labmig.placement); the panel
    shows that, not what the outcome implies: a completed run whose VM runs on two hosts says so."""
    result = synthetic_run(controller.params)
    assert tables.outcome_words(result) == "the VM runs on lab2"          # the simulator: by its outcome
    result.extra["placement"] = {"words": "vm RUNS ON 2 HOSTS: lab1, lab2",
                                 "problem": "the VM is active on more than one host"}
    assert tables.outcome_words(result) == ("vm RUNS ON 2 HOSTS: lab1, lab2 "
                                            "(CHECK: the VM is active on more than one host)")
