"""Where a VM is after a run (labmig.placement) and what `labmig status` flags (needs_attention).

Pure logic over host doubles: the lab tests check the same words against real libvirt
(tests/live/test_live_lab.py, tests/cold/test_cold_lab.py).
"""
from __future__ import annotations

from fakehosts import FakeHost

from labmig.commands.migrate import needs_attention
from labmig.cold.journal import Journal, Step
from labmig.placement import HostView, Placement, observe, say_where


class DeadHost:
    name, uri = "lab2", "fake:///lab2"

    def domain(self, vm):
        raise ConnectionError("libvirtd is not answering")


def test_after_a_completed_run_it_runs_on_the_destination_only():
    placement = observe("vm1", [FakeHost("lab1"), FakeHost("lab2", vm1=True)])
    assert placement.runs_on == ["lab2"] and placement.single and placement.problem() is None
    assert placement.words() == "vm1 runs on lab2 (defined there only)"


def test_awaiting_confirm_is_defined_on_the_source_and_that_is_no_problem():
    placement = observe("vm1", [FakeHost("lab1", vm1=False), FakeHost("lab2", vm1=True)])
    assert placement.words() == "vm1 runs on lab2; it is also defined (shut off) on lab1"
    assert placement.problem() is None


def test_on_two_hosts_and_lost_are_problems():
    both = observe("vm1", [FakeHost("lab1", vm1=True), FakeHost("lab2", vm1=True)])
    assert both.words() == "vm1 RUNS ON 2 HOSTS: lab1, lab2"
    assert both.problem() == "the VM is active on more than one host"
    lost = observe("vm1", [FakeHost("lab1"), FakeHost("lab2")])
    assert lost.words() == "vm1 runs nowhere and is defined nowhere"
    assert "neither running nor defined" in lost.problem()
    stopped = observe("vm1", [FakeHost("lab1", vm1=False), FakeHost("lab2")])
    assert stopped.words() == "vm1 runs nowhere; it is defined (shut off) on lab1" and stopped.problem() is None


def test_a_host_that_cannot_be_asked_is_said_never_guessed():
    placement = observe("vm1", [FakeHost("lab1", vm1=True), DeadHost()])
    assert not placement.single and placement.unreachable == ["lab2"]
    assert placement.words() == "vm1 runs on lab1 (defined there only); lab2 could not be asked (libvirtd is not answering)"
    assert placement.problem() == "a host could not be asked"


def test_paused_post_copy_split_is_named_with_its_reason():
    placement = Placement("vm1", (HostView("lab1", state="paused", persistent=True, reason="migrating"),
                                  HostView("lab2", state="paused", persistent=False, reason="post-copy failed")))
    assert placement.words() == ("vm1 is paused on lab1 (defined, migrating); "
                                 "paused on lab2 (transient, post-copy failed)")
    assert placement.problem() == "the VM is active on more than one host"


def test_say_where_prints_one_line_with_the_check(capsys):
    import sys

    say_where("vm1", [FakeHost("lab1", vm1=True), FakeHost("lab2", vm1=True)], sys.stderr)
    err = capsys.readouterr().err
    assert err == "labmig: where it is now: vm1 RUNS ON 2 HOSTS: lab1, lab2 (CHECK: the VM is active on more than one host)\n"


def _entry(host, *vms):
    return {"host": host, "uri": f"fake:///{host}", "reachable": True, "vms": list(vms)}


def test_status_flags_a_job_whose_labmig_is_gone_but_not_one_that_is_held(tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_LOCK_DIR", str(tmp_path / "locks"))
    job = {"elapsed": 3.0, "pass": 2, "memory_done_pct": 40.0, "memory_remaining": 1}
    orphan = [_entry("lab1", {"name": "vm1", "state": "running", "persistent": True, "job": job}),
              _entry("lab2", {"name": "vm1", "state": "paused", "persistent": False})]
    flagged = needs_attention(orphan)
    assert [f["vm"] for f in flagged] == ["vm1"]
    assert "no labmig process" in flagged[0]["what"] and "labmig abort vm1" in flagged[0]["do"]
    held = [_entry("lab1", {"name": "vm1", "state": "running", "persistent": True, "job": job,
                            "locked_by": {"pid": 1, "host": "h", "command": "labmig", "since": 0}})]
    assert needs_attention(held) == []


def test_status_flags_a_vm_active_on_two_hosts_without_a_job():
    split = [_entry("lab1", {"name": "vm1", "state": "running", "persistent": True}),
             _entry("lab2", {"name": "vm1", "state": "running", "persistent": True})]
    flagged = needs_attention(split)
    assert len(flagged) == 1 and "active on 2 hosts (lab1, lab2)" in flagged[0]["what"]


def test_status_flags_interrupted_and_awaiting_cold_journals_not_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_LOCK_DIR", str(tmp_path / "locks"))
    plan = {"source": "lab1", "destination": "lab2", "disks": []}
    cut = Journal("cut", tmp_path)
    cut.begin({**plan, "vm": "cut"})
    cut.append(Step.SOURCE_STOPPED)
    waiting = Journal("waiting", tmp_path)
    waiting.begin({**plan, "vm": "waiting"})
    for step in (Step.SOURCE_STOPPED, Step.DEST_DEFINED, Step.DEST_STARTED, Step.GUEST_UP):
        waiting.append(step)
    flagged = {f["vm"]: f for f in needs_attention([], [cut, waiting])}
    assert set(flagged) == {"cut", "waiting"}
    assert f"interrupted at '{Step.SOURCE_STOPPED}'" in flagged["cut"]["what"]
    assert flagged["cut"]["do"] == "`labmig recover cut` brings it to its source or its destination"
    assert "awaiting confirm" in flagged["waiting"]["what"]
