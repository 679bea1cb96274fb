"""Link rate and max bandwidth: one word each, from the command line to where the value acts.

``--link-rate`` is the capacity of the path between the hosts (the simulator's link, the lab's
shaped link); ``--max-bandwidth`` is QEMU's cap on the migration stream (the simulator's engine,
libvirt's VIR_MIGRATE_PARAM_BANDWIDTH in MiB/s, as virDomainMigrateToURI3 takes it). Each test
walks one flag of one command to the place it takes effect. No lab: LiveMigration and the lab
are stood in for where the value arrives.
"""
import json
from types import SimpleNamespace

import pytest

from labmig import backends
from labmig.cli import main
from labmig.model import MigrationResult, Outcome
from labmig.sim.engine import PAGE_HEADER

libvirt = pytest.importorskip("libvirt")

GiB, MiB = 1 << 30, 1 << 20


def one_pass(memory: int, rate: float) -> float:
    """An idle guest crosses in one pre-copy pass: every page and its header at the stream's rate."""
    return memory // 4096 * (4096 + PAGE_HEADER) / rate


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


# -- labmig simulate -----------------------------------------------------------------
def test_simulate_link_rate_and_max_bandwidth_reach_the_engine(capsys):
    capped, _ = run_json(capsys, "simulate", "--memory", "1GiB", "--link-rate", "1Gbit/s", "--max-bandwidth",
                         "50MiB/s", "--rtt", "0", "--json")
    free, _ = run_json(capsys, "simulate", "--memory", "1GiB", "--link-rate", "1Gbit/s", "--rtt", "0", "--json")
    assert capped["plan"]["max_bandwidth"] == 50 * MiB and capped["plan"]["link"]["link_rate"] == 1e9 / 8
    assert capped["total_time"] == pytest.approx(one_pass(GiB, 50 * MiB), rel=1e-6)     # ≈ 20.5 s: the cap binds
    assert free["total_time"] == pytest.approx(one_pass(GiB, 1e9 / 8), rel=1e-6)        # ≈ 8.6 s: the link


def test_simulate_old_bandwidth_flag_is_the_link_rate_and_says_so(capsys):
    data, err = run_json(capsys, "simulate", "--memory", "1GiB", "--bandwidth", "1Gbit/s", "--rtt", "0", "--json")
    assert "deprecated" in err and "means --link-rate" in err
    assert data["plan"]["link"]["link_rate"] == 1e9 / 8 and data["plan"]["max_bandwidth"] == 0


def test_simulate_dirty_rate_alone_means_uniform_writes(capsys):
    data, _ = run_json(capsys, "simulate", "--memory", "4GiB", "--wss", "2GiB", "--dirty-rate", "200MiB/s",
                       "--link-rate", "800Mbit/s", "--json")
    assert data["plan"]["workload"]["kind"] == "uniform"
    assert data["iterations"] > 1 and data["bytes_by_phase"]["precopy"] > 4 * GiB


# -- labmig migrate live -------------------------------------------------------------
class FakeLab:
    """The local lab's link as the live backend sees it: a rate, shaped and put back."""

    def __init__(self, rate=None):
        self.link_rate, self.shaped = rate, []

    def shape_link(self, rate):
        self.shaped.append(rate)


class FakeLiveMigration:
    """Stands in for LiveMigration: records the flags and parameters libvirt would be given."""

    seen: list = []

    def __init__(self, plan, source, destination, on_point=None, on_event=None, probe=None):
        self.plan, self.notes = plan, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def note(self, kind, message):
        self.notes.append((kind, message))

    def abort(self, reason):
        pass

    def run(self):
        params = self.plan.params(libvirt, "tcp://10.77.0.2")
        FakeLiveMigration.seen.append((self.plan, params, list(self.notes)))
        return MigrationResult(kind="live", strategy="precopy", backend="libvirt", outcome=Outcome.COMPLETED,
                               total_time=1.0, downtime=0.01, vm=self.plan.vm, source="lab1", destination="lab2")


@pytest.fixture
def fake_live(monkeypatch):
    import labmig.hosts as hosts
    import labmig.live.migration as migration
    import labmig.live.probe as probe

    lab = FakeLab(rate=32 * MiB)
    FakeLiveMigration.seen = []
    monkeypatch.setattr(migration, "LiveMigration", FakeLiveMigration)
    monkeypatch.setattr(hosts, "resolve_host", lambda name: SimpleNamespace(name=name, uri=f"test:///{name}"))
    monkeypatch.setattr(probe, "probe_for", lambda vm: None)
    monkeypatch.setattr(backends, "_local_lab_of", lambda source, destination: lab)
    return lab


def test_migrate_live_max_bandwidth_reaches_libvirts_bandwidth_parameter(fake_live, capsys):
    result, _ = run_json(capsys, "migrate", "live", "g", "--from", "lab1", "--to", "lab2",
                         "--max-bandwidth", "50MiB/s", "--json")
    plan, params, _notes = FakeLiveMigration.seen[0]
    assert plan.options.max_bandwidth == 50 * MiB
    assert params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 50          # MiB/s, as libvirt takes it
    assert fake_live.shaped == [] and result["outcome"] == "completed"   # no link rate: the lab link untouched


def test_migrate_live_old_bandwidth_flag_is_the_max_bandwidth_and_says_so(fake_live, capsys):
    _result, err = run_json(capsys, "migrate", "live", "g", "--from", "lab1", "--to", "lab2",
                            "--bandwidth", "20MiB/s", "--json")
    assert "deprecated" in err and "means --max-bandwidth" in err
    assert FakeLiveMigration.seen[0][1][libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 20


def test_migrate_live_link_rate_shapes_the_lab_link_for_the_run(fake_live, capsys):
    result, _ = run_json(capsys, "migrate", "live", "g", "--from", "lab1", "--to", "lab2",
                         "--link-rate", "8MiB/s", "--json")
    _plan, params, notes = FakeLiveMigration.seen[0]
    assert fake_live.shaped == [8 * MiB, 32 * MiB]          # shaped for the run, then put back
    assert any("shaped to 67.11 Mbit/s" in message for _kind, message in notes)   # 8 MiB/s
    assert libvirt.VIR_MIGRATE_PARAM_BANDWIDTH not in params  # a link rate is not a cap on the stream


# -- labmig compare --simulate -------------------------------------------------------
def test_compare_simulate_takes_the_link_rate_and_the_cap(capsys):
    """compare_simulated's guest: 128 MiB of RAM, a 16 MiB local disk mirrored before the RAM."""
    capped, _ = run_json(capsys, "compare", "--simulate", "--link-rate", "100Mbit/s", "--max-bandwidth", "5MiB/s",
                         "--json")
    live, cold = capped["live"], capped["cold"]
    assert live["total_time"] == pytest.approx(16 * MiB / (5 * MiB) + one_pass(128 * MiB, 5 * MiB), rel=1e-3)
    # the cold copy goes over the link, not through QEMU: shutdown 5 s, boot 15 s, the disk + its definition
    rtt = cold["plan"]["link"]["rtt"]
    assert cold["total_time"] == pytest.approx(5 + 15 + rtt + (16 * MiB + 8192) / (100e6 / 8), rel=1e-6)
    _, err = run_json(capsys, "compare", "--simulate", "--bandwidth", "5MiB/s", "--json")
    assert "means --max-bandwidth" in err


# -- the notebook panel ---------------------------------------------------------------
def _panel_controller(**params):
    from labmig.widgets.controller import MigrationController

    return MigrationController(backend="simulator", playback=0.0, vm="g", memory="1GiB", dirty_rate="0",
                               **params)


def test_panel_max_bandwidth_reaches_the_simulator_and_its_prediction():
    controller = _panel_controller(link_rate="1Gbit/s", max_bandwidth="50MiB/s")
    result = controller.migrate(timeout=60)
    assert result.plan["max_bandwidth"] == 50 * MiB and result.plan["link"]["link_rate"] == 1e9 / 8
    rtt = result.plan["link"]["rtt"]                                              # the panel keeps the default
    assert result.total_time == pytest.approx(rtt + one_pass(GiB, 50 * MiB), rel=1e-9)    # the cap binds
    assert controller.current.prediction.total_time == result.total_time


def test_panel_link_rate_reaches_the_simulator():
    result = _panel_controller(link_rate="1Gbit/s").migrate(timeout=60)
    assert result.plan["max_bandwidth"] == 0                                        # empty field: no cap
    assert result.total_time == pytest.approx(result.plan["link"]["rtt"] + one_pass(GiB, 1e9 / 8), rel=1e-9)


def test_panel_max_bandwidth_reaches_libvirts_bandwidth_parameter(fake_live):
    """The panel's lab run goes through the same live backend as `migrate live`."""
    from labmig.widgets import labglue
    from labmig.widgets.params import MigrationParams

    params = MigrationParams(backend="local lab", vm="g", source="lab1", destination="lab2", memory="256MiB",
                             working_set="64MiB", link_rate="1Gbit/s", max_bandwidth="20MiB/s")
    result = labglue.run(params, on_point=lambda point: None, abort=SimpleNamespace(is_set=lambda: False))
    plan, libvirt_params, notes = FakeLiveMigration.seen[0]
    assert plan.options.max_bandwidth == 20 * MiB
    assert libvirt_params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 20
    # The panel always states its link rate: on the lab the link is shaped to it for the run.
    assert fake_live.shaped == [1e9 / 8, 32 * MiB]
    assert result.extra["link_rate"] == 1e9 / 8 and result.extra["link_shaped"] is True


def test_panel_refuses_the_old_word_and_names_the_two_new_ones():
    from labmig.errors import InvalidInput
    from labmig.widgets.params import MigrationParams

    with pytest.raises(InvalidInput, match="meant two things") as info:
        MigrationParams().replace(bandwidth="1Gbit/s")
    assert "link_rate" in info.value.hint and "max_bandwidth" in info.value.hint
