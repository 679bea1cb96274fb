"""The Backend protocol: one precheck report type, failures as results, the registry.

Pure logic only: the libvirt backends are driven here through stand-ins for
LiveMigration / ColdMigration; the real runs are covered by the lab tests.
"""
import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from labmig import backends
from labmig.backends import (BACKENDS, Backend, ColdBackend, LiveBackend, PrecheckReport, SimulatorBackend,
                             backend_for, get_backend, libvirt_mapping, live_spec)
from labmig.cold.migration import ColdPlan, ColdRunOptions
from labmig.errors import InvalidInput, MigrationFailed, PrecheckFailed
from labmig.live.plan import LiveOptions, LivePlan
from labmig.model import Event, MigrationResult, Outcome, TimelinePoint
from labmig.sim.engine import PAGE_HEADER
from labmig.spec import VM, MigrationSpec

GiB, MiB = 1 << 30, 1 << 20


def test_registry_names_every_backend_and_each_follows_the_protocol():
    assert set(BACKENDS) == {"sim", "live", "cold"}
    for name in BACKENDS:
        assert isinstance(get_backend(name), Backend)
    assert isinstance(backend_for(MigrationSpec(strategy="cold")), ColdBackend)
    assert isinstance(backend_for(MigrationSpec(), simulate=True), SimulatorBackend)
    with pytest.raises(InvalidInput, match="unknown backend"):
        get_backend("teleport")


@pytest.mark.parametrize("cap", [50 * MiB, 0.0])
def test_simulator_backend_runs_the_spec_with_the_cap_binding(cap):
    """An idle guest crosses in one pass: pages x (page + header) / min(link rate, max bandwidth)."""
    spec = MigrationSpec.from_dict({"vm": {"memory": "1GiB"}, "link": {"link_rate": "1Gbit/s", "rtt": 0},
                                    "max_bandwidth": cap})
    points, events = [], []
    result = SimulatorBackend().run(spec, on_point=points.append, on_event=events.append)
    rate = min(1e9 / 8, cap) if cap else 1e9 / 8
    assert result.total_time == pytest.approx(GiB // 4096 * (4096 + PAGE_HEADER) / rate, rel=1e-3)
    assert points == result.timeline and events == result.events


def test_simulator_backend_checks_and_honours_an_abort_set_before_the_start():
    spec = MigrationSpec()
    report = SimulatorBackend().precheck(spec)
    assert isinstance(report, PrecheckReport) and report.ok and report.backend == "sim"
    flag = threading.Event()
    flag.set()
    result = SimulatorBackend().run(spec, abort=flag)
    assert result.outcome == Outcome.ABORTED and "not started" in result.message


def test_a_failed_report_raises_precheck_failed_naming_the_first_failure():
    report = PrecheckReport("live", MigrationSpec(destination="lab2"))
    report.add("cpu", True, "compatible")
    report.add("memory", False, "lab2 has 1 GiB free, the VM needs 2 GiB", "free memory on lab2")
    assert not report.ok and len(report.to_list()) == 2
    with pytest.raises(PrecheckFailed, match="1 GiB free") as info:
        report.raise_if_failed()
    assert info.value.hint == "free memory on lab2"


def test_backends_refuse_a_spec_of_the_other_kind():
    with pytest.raises(InvalidInput, match="runs live migrations"):
        LiveBackend().run(MigrationSpec(strategy="cold", destination="lab2"))
    with pytest.raises(InvalidInput, match="no destination"):
        LivePlan.from_spec(MigrationSpec())
    with pytest.raises(InvalidInput, match="no destination"):
        ColdPlan.from_spec(MigrationSpec(strategy="cold", vm=VM(name="g")))


def test_the_live_plan_takes_the_cap_and_the_policy_from_the_spec():
    spec = MigrationSpec.from_dict({"vm": {"name": "g"}, "destination": "lab2", "max_bandwidth": "50MiB/s",
                                    "policy": {"completion_timeout": "90s"},
                                    "run_options": {"block_migration": True}})
    opts = LivePlan.from_spec(spec).options
    assert opts.max_bandwidth == 50 * MiB and opts.completion_timeout == 90.0 and opts.block_migration is True
    with pytest.raises(InvalidInput, match="own place"):
        LivePlan.from_spec(MigrationSpec(destination="lab2", run_options={"max_bandwidth": 1}))
    with pytest.raises(InvalidInput, match="unknown live run option"):
        LivePlan.from_spec(MigrationSpec(destination="lab2", run_options={"colour": 1}))


# Live specs whose strategy options each have a libvirt counterpart (Strategy.to_libvirt).
ROUND_TRIP_STRATEGIES = [
    ("precopy", {"downtime_limit": "500ms"}, {"max_downtime": 0.5}),
    ("postcopy", {"postcopy_after_passes": 2}, {"postcopy": "after:2"}),
    ("hybrid", {"postcopy_after_passes": 3, "downtime_limit": "100ms"}, {"postcopy": "after:3", "max_downtime": 0.1}),
    ("autoconverge", {"cpu_throttle_initial": 30, "cpu_throttle_increment": 15},
     {"auto_converge": True, "auto_converge_initial": 30, "auto_converge_increment": 15}),
    ("compression", {"xbzrle": False, "multifd_channels": 4}, {"parallel_connections": 4, "compression": None}),
]


@pytest.mark.parametrize("strategy, options, on_libvirt", ROUND_TRIP_STRATEGIES)
def test_a_live_spec_round_trips_through_its_live_plan(strategy, options, on_libvirt):
    """spec -> LivePlan -> spec -> LivePlan: nothing a live run uses is lost on the way: the strategy,
    its options on libvirt, the cap, the policy, the run options."""
    run_options = {"block_migration": True, "persistent": False, "undefine_source": False, "call_timeout": 12.0}
    spec = MigrationSpec.from_dict({
        "vm": {"name": "g"}, "source": "lab1", "destination": "lab2", "strategy": strategy, "options": options,
        "max_bandwidth": "50MiB/s", "policy": {"name": "wait", "completion_timeout": "90s",
                                              "timeout_action": "force-complete"},
        "run_options": run_options})
    plan = LivePlan.from_spec(spec)
    assert (plan.vm, plan.source, plan.destination) == ("g", "lab1", "lab2")
    opts = plan.options
    assert {k: getattr(opts, k) if k != "postcopy" else str(opts.postcopy) for k in on_libvirt} == on_libvirt
    assert opts.max_bandwidth == 50 * MiB
    assert (opts.policy, opts.completion_timeout, opts.timeout_action) == ("wait", 90.0, "force-complete")
    assert {k: getattr(opts, k) for k in run_options} == run_options

    back = plan.to_spec(spec.strategy)
    assert (back.vm.name, back.source, back.destination, back.kind) == ("g", "lab1", "lab2", "live")
    assert back.strategy == spec.strategy and back.max_bandwidth == spec.max_bandwidth
    assert back.policy == spec.policy
    assert {k: back.run_options.get(k) for k in run_options} == run_options
    assert LivePlan.from_spec(back) == plan
    assert libvirt_mapping(back) == libvirt_mapping(spec)


def test_live_spec_passes_on_only_the_flags_given_over_a_strategy():
    """`migrate live --strategy autoconverge --max-downtime 1s`: the strategy's mapping, the flag over it."""
    spec = live_spec("g", "lab1", "lab2", LiveOptions(max_downtime="1s", max_bandwidth="8MiB/s"),
                     strategy="autoconverge", link_rate="1Gbit/s")
    assert spec.run_options == {"max_downtime": 1.0} and spec.max_bandwidth == 8 * MiB and spec.link_given
    opts = LivePlan.from_spec(spec).options
    assert opts.auto_converge and opts.auto_converge_initial == 20 and opts.max_downtime == 1.0


def test_a_cold_spec_becomes_its_cold_plan_with_its_run_options():
    spec = MigrationSpec.from_dict({
        "vm": {"name": "g"}, "source": "lab1", "destination": "lab2", "strategy": "cold",
        "options": {"block_size": "256KiB"},
        "run_options": {"shutdown_timeout": "1500ms", "boot_timeout": "3min", "verify": "fast",
                        "ready_marker": "READY", "auto_confirm": True, "delete_source_disks": True}})
    plan = ColdPlan.from_spec(spec)
    assert (plan.vm, plan.source, plan.destination) == ("g", "lab1", "lab2")
    assert plan.options == ColdRunOptions(shutdown_timeout=1.5, boot_timeout=180.0, block_size=256 * 1024,
                                          verify="fast", ready_marker="READY", auto_confirm=True,
                                          delete_source_disks=True)
    # a run option wins over what the strategy sets; an unknown one is refused by name
    assert ColdPlan.from_spec(replace(spec, run_options={"block_size": 4096})).options.block_size == 4096
    with pytest.raises(InvalidInput, match="unknown cold run option.*colour"):
        ColdPlan.from_spec(replace(spec, run_options={"colour": 1}))


class _FakeCold:
    """Stands in for ColdMigration: fails after a change, as a rolled-back run does."""

    def __init__(self, plan, on_point=None, on_event=None, probe=None, progress=False):
        self.plan = plan
        self.src = self.dst = SimpleNamespace(host=SimpleNamespace(name="lab?", uri="qemu:///nowhere"))
        self.timeline = [TimelinePoint(t=1.5, phase="shutdown")]
        self.events = [Event(0.0, "shutdown", "guest shutting down")]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def note(self, kind, message):
        self.events.append(Event(0.0, kind, message))

    def run(self):
        raise MigrationFailed("cold migration of g failed: disk copy cut; g runs on lab1 again",
                              "retry", rolled_back=True)


def test_a_failed_cold_run_is_a_result_saying_where_the_vm_is(monkeypatch):
    import labmig.cold.migration as cold
    import labmig.live.probe as probe

    monkeypatch.setattr(cold, "ColdMigration", _FakeCold)
    monkeypatch.setattr(probe, "probe_for", lambda vm: None)
    spec = MigrationSpec(strategy="cold", vm=VM(name="g"), source="lab1",
                         destination="lab2")
    result = ColdBackend().run(spec)
    assert isinstance(result, MigrationResult)
    assert result.outcome == Outcome.ROLLED_BACK and "runs on lab1 again" in result.message
    assert result.extra["rolled_back"] is True and result.total_time == 1.5 and result.events


def test_migrate_cold_command_runs_through_the_cold_backend(monkeypatch, capsys):
    """`labmig migrate cold` builds one spec, the cold backend turns its run options into the cold
    run's options, and a rolled-back run is printed as a result and exits 1 (not a traceback)."""
    import labmig.cold.migration as cold
    import labmig.hosts as hosts
    import labmig.live.probe as probe
    from labmig.cli import main

    made = []

    class Recording(_FakeCold):
        def __init__(self, plan, **kwargs):
            super().__init__(plan, **kwargs)
            made.append((plan, kwargs))

    monkeypatch.setattr(cold, "ColdMigration", Recording)
    monkeypatch.setattr(probe, "probe_for", lambda vm: None)
    monkeypatch.setattr(hosts, "resolve_host", lambda name: SimpleNamespace(name=name, uri=f"test:///{name}"))
    code = main(["migrate", "cold", "g", "--from", "lab1", "--to", "lab2", "--shutdown-timeout", "1500ms",
                 "--block-size", "128KiB", "--verify", "fast", "--json"])
    out, err = capsys.readouterr()
    plan, kwargs = made[0]
    assert (plan.vm, plan.source, plan.destination) == ("g", "lab1", "lab2")
    assert plan.options.shutdown_timeout == 1.5 and plan.options.block_size == 128 * 1024
    assert plan.options.verify == "fast" and plan.options.auto_confirm is False
    assert kwargs["progress"] is False                 # --json: no progress line on the terminal
    assert code == 1 and "runs on lab1 again" in err and "hint: retry" in err
    assert '"outcome": "rolled-back"' in out


def test_the_abort_flag_reaches_a_running_migration():
    stopped = []
    flag = threading.Event()
    end = backends._abort_watcher(flag, stopped.append)
    flag.set()
    for _ in range(50):
        if stopped:
            break
        threading.Event().wait(0.05)
    end()
    assert stopped == ["aborted by the caller"]


def test_the_lab_link_is_shaped_for_the_run_and_restored(monkeypatch):
    class FakeLab:
        link_rate = 32 * MiB
        shaped: list = []

        def shape_link(self, rate):
            self.shaped.append(rate)

    lab = FakeLab()
    monkeypatch.setattr(backends, "_local_lab_of", lambda s, d: lab)
    notes = []
    host = SimpleNamespace(uri="x")
    spec = MigrationSpec(destination="lab2").with_param("link-rate", "8MiB/s")
    with backends._lab_link(spec, host, host, lambda kind, message: notes.append(message)) as shaped:
        assert shaped and lab.shaped == [8 * MiB]
    assert lab.shaped == [8 * MiB, 32 * MiB]
    assert "shaped to" in notes[0] and "back to" in notes[1]
    lab.shaped.clear()
    with backends._lab_link(MigrationSpec(destination="lab2"), host, host, notes.append) as shaped:
        assert not shaped
    assert lab.shaped == []       # no link rate stated: the lab's link is left alone
