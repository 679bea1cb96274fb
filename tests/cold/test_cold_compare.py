"""labmig compare: the table from the simulator (pure logic), and measured on the real lab."""
import json
import os
import subprocess
import sys

import pytest

from labmig.cli import build_parser
from labmig.compare import compare_simulated


def test_simulated_table_has_every_aspect_and_the_ratio():
    comp = compare_simulated(note="why")
    aspects = [r[0] for r in comp.rows()]
    for want in ("VM state during the migration", "downtime", "client-seen interruption", "total time",
                 "bytes on the wire", "network needs", "storage needs", "what a failure leaves"):
        assert want in aspects
    assert comp.downtime_ratio is not None and comp.downtime_ratio < 0.05
    text = comp.render()
    assert "Modelled by the simulator" in text and "why" in text
    data = comp.to_dict()
    assert data["backend"] == "sim" and data["live"]["kind"] == "live" and data["cold"]["kind"] == "cold"


def test_cli_knows_the_cold_commands():
    p = build_parser()
    a = p.parse_args(["migrate", "cold", "vm1", "--to", "lab2", "--shutdown-timeout", "5s", "--json"])
    assert a.kind == "cold" and a.to == "lab2" and a.json
    for argv in (["confirm", "vm1", "--delete-source-disks"], ["revert", "vm1"], ["recover"],
                 ["compare", "--simulate"]):
        assert callable(p.parse_args(argv).func)


def test_cli_bad_option_values_are_clear_errors(capsys):
    from labmig.cli import main

    assert main(["migrate", "cold", "vm1", "--to", "lab2", "--shutdown-timeout", "soon"]) == 2
    err = capsys.readouterr().err
    assert "cannot read duration 'soon'" in err and "hint" in err


def test_cli_compare_simulate_json():
    out = subprocess.run([sys.executable, "-m", "labmig", "compare", "--simulate", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["backend"] == "sim"


@pytest.mark.lab
@pytest.mark.slow
def test_compare_on_the_lab(lab, tmp_path):
    from labmig.cold.trials import make_guest

    make_guest(lab, "cmpt", 62)
    try:
        env = dict(os.environ, LABMIG_JOURNAL_DIR=str(tmp_path))
        proc = subprocess.run([sys.executable, "-m", "labmig", "compare", "cmpt", "--shutdown-timeout", "1s",
                               "--json"], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        live, cold = data["live"], data["cold"]
        assert live["outcome"] == cold["outcome"] == "completed"
        assert live["kind"] == "live" and cold["kind"] == "cold"
        # both measured in this run: live downtime is a small fraction of cold downtime
        assert 0 < live["downtime"] < 0.1 * cold["downtime"], (live["downtime"], cold["downtime"])
        assert live["client_interruption"] is not None and cold["client_interruption"] is not None
        assert live["client_interruption"] < cold["client_interruption"]
        assert cold["bytes_by_phase"]["disk"] >= 8 << 20   # the whole disk moved back (stale copy removed)
        assert lab.guest("cmpt").where() == {"lab1": "running"}
        print(f"\nlive downtime {live['downtime']:.3f} s (client {live['client_interruption']:.3f} s), "
              f"cold {cold['downtime']:.2f} s (client {cold['client_interruption']:.2f} s)")
    finally:
        lab.remove_guest("cmpt")


@pytest.mark.lab
@pytest.mark.slow
def test_compare_stops_after_an_injected_live_failure_on_the_lab(lab, tmp_path):
    """The destination's incoming QEMU killed mid-copy (the fault matrix's kill-dst-qemu) ends
    `labmig compare`: exit 1, a message saying what happened and where the VM is, the VM
    running on the source only, and no cold leg started (no cold journal was written)."""
    import time

    from labstate import wait_until

    from labmig.cold.trials import make_guest
    from labmig.lab.faults import inject

    make_guest(lab, "cmpf", 63)
    try:
        env = dict(os.environ, LABMIG_JOURNAL_DIR=str(tmp_path))
        # A slow stream (2 MiB/s): the 16 MiB disk alone takes 8 s, time enough to strike.
        proc = subprocess.Popen([sys.executable, "-m", "labmig", "compare", "cmpf", "--max-bandwidth", "2MiB/s",
                                 "--shutdown-timeout", "1s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            wait_until(lambda: lab.host("lab2").qemu_pid("cmpf"), 120, "the incoming QEMU of cmpf on lab2", lab)
            time.sleep(1.0)   # the copy is under way
            inject(lab, "kill-qemu", host="lab2", domain="cmpf")
            _out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 1, err
        assert "labmig compare: the live migration of cmpf lab1 → lab2 ended" in err, err
        assert "no cold migration was started" in err, err
        wait_until(lambda: lab.guest("cmpf").where() == {"lab1": "running"}, 60, "cmpf running on lab1 only", lab)
        journals = [p for p in tmp_path.rglob("*") if p.is_file() and "locks" not in p.parts]
        assert journals == [], "a cold leg wrote a journal"
    finally:
        lab.remove_guest("cmpf")


class _Leg:
    """A backend standing in for live or cold: returns a fixed outcome and records the specs it ran."""

    def __init__(self, outcome, rolled_back=False, message="done"):
        self.outcome, self.rolled_back, self.message, self.ran = outcome, rolled_back, message, []

    def run(self, spec, on_point=None, on_event=None, abort=None):
        from labmig.model import MigrationResult

        self.ran.append(spec)
        result = MigrationResult(kind=spec.kind, strategy=spec.strategy, backend="libvirt", outcome=self.outcome,
                                 total_time=3.0, downtime=0.0, vm=spec.vm.name, source=spec.source,
                                 destination=spec.destination, message=self.message)
        result.extra["rolled_back"] = self.rolled_back
        return result


def test_compare_stops_after_a_rolled_back_live_leg_and_starts_no_cold_one():
    from labmig.compare import LiveLegFailed, compare_on_hosts
    from labmig.model import Outcome

    live = _Leg(Outcome.ROLLED_BACK, rolled_back=True, message="the link went down during pass 2")
    cold = _Leg(Outcome.COMPLETED)
    with pytest.raises(LiveLegFailed) as info:
        compare_on_hosts("g", "lab1", "lab2", backends={"live": live, "cold": cold})
    text = info.value.message
    assert "rolled-back" in text and "the link went down during pass 2" in text
    assert "g runs on lab1 again" in text and "no cold migration was started" in text
    assert info.value.rolled_back and info.value.live.outcome == Outcome.ROLLED_BACK
    assert len(live.ran) == 1 and cold.ran == []


def test_compare_after_a_completed_live_leg_brings_the_vm_back_cold():
    from labmig.compare import compare_on_hosts
    from labmig.live.plan import LiveOptions
    from labmig.model import Outcome

    live, cold = _Leg(Outcome.COMPLETED), _Leg(Outcome.COMPLETED)
    comp = compare_on_hosts("g", "lab1", "lab2", LiveOptions(max_bandwidth="50MiB/s"), link_rate="1Gbit/s",
                            backends={"live": live, "cold": cold})
    (there,), (back,) = live.ran, cold.ran
    assert (there.source, there.destination, back.source, back.destination) == ("lab1", "lab2", "lab2", "lab1")
    assert there.max_bandwidth == 50 << 20 and there.link.link_rate == back.link.link_rate == 1e9 / 8
    assert back.kind == "cold" and back.run_options["auto_confirm"] and back.run_options["delete_source_disks"]
    assert comp.live.outcome == comp.cold.outcome == Outcome.COMPLETED


def test_compare_command_says_what_happened_and_exits_1(monkeypatch, capsys):
    from types import SimpleNamespace

    import labmig.backends as backends
    import labmig.hosts as hosts
    from labmig.cli import main
    from labmig.model import Outcome

    live, cold = _Leg(Outcome.ROLLED_BACK, rolled_back=True, message="qemu was killed"), _Leg(Outcome.COMPLETED)
    monkeypatch.setattr(backends, "LiveBackend", lambda: live)
    monkeypatch.setattr(backends, "ColdBackend", lambda: cold)
    monkeypatch.setattr(hosts, "resolve_host", lambda name: SimpleNamespace(name=name, uri=f"test:///{name}"))
    assert main(["compare", "g", "--from", "lab1", "--to", "lab2"]) == 1
    err = capsys.readouterr().err
    assert "qemu was killed" in err and "g runs on lab1 again" in err and "no cold migration" in err
    assert cold.ran == []
