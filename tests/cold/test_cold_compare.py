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
