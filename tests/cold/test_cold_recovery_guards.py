"""Recovery guards: a torn journal line, a damaged journal among others, a state no journal allows,
and source disks that must not be deleted.

The hosts are in-memory stand-ins for libvirt (tests/fakehosts.py) and the disk helpers are
fakes that record what they are asked, so nothing here needs a lab. The rule followed is
Nova's resize flow as labmig/cold/recovery.py states it: until the guest is up on the
destination roll back, from then on stay there; and never act on what the journal cannot explain.
"""
from __future__ import annotations

import argparse
import contextlib
from types import SimpleNamespace

import pytest
from fakehosts import FakeHost

from labmig.cold import finish
from labmig.cold import recovery as R
from labmig.cold.hostops import recover_journal
from labmig.cold.journal import Journal, JournalError, Step, journal_dir
from labmig.commands.cold import cmd_recover
from labmig.errors import PrecheckFailed

DISK = {"kind": "local", "src": "/src/images/vm1-src.qcow2", "dst": "/dst/images/vm1-dst.qcow2", "target": "vda"}


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_LOCK_DIR", str(tmp_path / "locks"))


def journal_at(directory, vm, *steps, disks=(), **last_data):
    journal = Journal(vm, directory)
    journal.crash_hook = None
    journal.begin({"vm": vm, "was_running": True, "source": {"name": "src"}, "destination": {"name": "dst"},
                   "source_xml": f"<domain>{vm}</domain>", "dest_xml": f"<domain>{vm}</domain>",
                   "disks": list(disks)})
    for i, step in enumerate(steps):
        journal.append(step, **(last_data if i == len(steps) - 1 else {}))
    return journal


def sides(src, dst):
    return SimpleNamespace(host=src), SimpleNamespace(host=dst)


# -- a torn last line, a damaged middle line ----------------------------------------------

def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_write(tmp_path):
    """A crash while a record was written leaves part of a line: that step never started.

    Before the fix the next record was appended to the torn line, which made a damaged middle
    line and blocked `labmig revert` until the file was edited by hand.
    """
    journal = journal_at(tmp_path, "vm1", Step.SOURCE_STOPPED, Step.DEST_DEFINED, Step.SOURCE_UNDEFINED,
                         Step.DEST_STARTED, Step.GUEST_UP)
    with open(journal.path, "ab") as f:
        f.write(b'{"step":"revert-started","t":0.25')        # killed in the middle of the write
    state = journal.state()
    assert state.last == Step.GUEST_UP and state.awaiting_confirm

    journal.append(Step.REVERT_STARTED)                       # what `labmig revert` writes first
    lines = journal.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and b'"t":0.25' not in journal.path.read_bytes()
    assert journal.state().steps[-2:] == [Step.GUEST_UP, Step.REVERT_STARTED]
    assert len(journal.records()) == 7


def test_a_torn_first_line_leaves_no_journal_and_a_new_one_can_begin(tmp_path):
    path = tmp_path / "vm1.jsonl"
    path.write_bytes(b'{"step":"begin","t":1,"da')
    assert Journal("vm1", tmp_path).state() is None
    journal = journal_at(tmp_path, "vm1", Step.SHUTDOWN_REQUESTED)
    assert journal.state().steps == [Step.BEGIN, Step.SHUTDOWN_REQUESTED]


def test_a_damaged_line_that_is_not_the_last_is_an_error_naming_file_and_line(tmp_path):
    journal = journal_at(tmp_path, "vm1", Step.SHUTDOWN_REQUESTED, Step.SOURCE_STOPPED)
    lines = journal.path.read_bytes().split(b"\n")
    lines[1] = lines[1][:20]                                  # line 2 of 3 damaged
    journal.path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError) as info:
        journal.state()
    assert str(journal.path) in info.value.message and "line 2" in info.value.message
    assert info.value.hint
    journal.append(Step.DISK_COPYING)                         # writing cuts off only a torn tail
    assert journal.path.read_bytes().split(b"\n")[1] == lines[1]
    with pytest.raises(JournalError, match="line 2"):
        journal.state()


# -- one damaged journal does not stop the others -------------------------------------------

@pytest.fixture
def hosts(monkeypatch):
    src, dst = FakeHost("src", vm1=False, vm2=False, vm3=False), FakeHost("dst")
    monkeypatch.setattr(finish, "cold_host_from", lambda d: SimpleNamespace(host={"src": src, "dst": dst}[d["name"]]))
    return src, dst


def three_journals(directory):
    journals = [journal_at(directory, vm, Step.SHUTDOWN_REQUESTED, Step.SOURCE_STOPPED)
                for vm in ("vm1", "vm2", "vm3")]
    lines = journals[1].path.read_bytes().split(b"\n")
    lines[1] = b"\x00\x00garbage"                             # vm2's second line damaged
    journals[1].path.write_bytes(b"\n".join(lines))
    return journals


def test_one_damaged_journal_among_three_is_reported_and_the_others_recovered(tmp_path, hosts):
    src, _ = hosts
    j1, j2, j3 = three_journals(tmp_path)
    done = {d.vm: d for d in finish.recover(journal_dir=tmp_path)}
    assert done["vm1"].target == done["vm3"].target == "source"
    assert not j1.exists() and not j3.exists()
    assert src.domains["vm1"].active and src.domains["vm3"].active
    bad = done["vm2"]
    assert bad.failed and bad.target == "error" and bad.final_step is None
    assert str(j2.path) in bad.reason and "line 2" in bad.reason and bad.hint
    assert j2.exists() and not src.domains["vm2"].active     # left as it was
    assert not done["vm1"].failed


def test_labmig_recover_prints_every_journal_and_exits_non_zero_when_one_failed(tmp_path, hosts, monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("LABMIG_JOURNAL_DIR", str(tmp_path))
    three_journals(journal_dir())
    rc = cmd_recover(argparse.Namespace(vm=None, json=False))
    out, err = capsys.readouterr()
    assert rc == 1
    assert "vm1: " in out and "vm3: " in out and "vm2: not recovered: " in out and "hint: " in out
    assert "not recovered: vm2" in err


# -- no action on a state the journal does not allow ----------------------------------------

@pytest.mark.parametrize("step, src_vm, dst_vm, seen", [
    (Step.SOURCE_STOPPED, {}, {}, "defined on neither host"),
    (Step.DEST_STARTED, {"vm1": True}, {"vm1": True}, "runs on both hosts"),
    (Step.GUEST_UP, {"vm1": True}, {"vm1": False}, "runs on the source although"),
    (Step.DISK_COPIED, {"vm1": False}, {"vm1": True}, "labmig had not defined it there"),
])
def test_an_observed_state_the_journal_does_not_allow_is_reported_not_acted_on(tmp_path, step, src_vm, dst_vm,
                                                                                 seen):
    steps = Step.FLOW[1: Step.FLOW.index(step) + 1]
    journal = journal_at(tmp_path, "vm1", *steps)
    src, dst = FakeHost("src", **src_vm), FakeHost("dst", **dst_vm)
    before = ({k: d.active for k, d in src.domains.items()}, {k: d.active for k, d in dst.domains.items()})
    plan = recover_journal(journal, journal.state(), *sides(src, dst))
    assert plan.unknown and plan.actions == [] and plan.final_step is None
    assert seen in plan.reason and f"the journal stops at '{step}'" in plan.reason and plan.hint
    after = ({k: d.active for k, d in src.domains.items()}, {k: d.active for k, d in dst.domains.items()})
    assert after == before and src.defined_xml == dst.defined_xml == []
    assert journal.exists() and journal.state().last == step    # left open for a person


def test_recover_of_one_vm_in_an_unknown_state_fails_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABMIG_JOURNAL_DIR", str(tmp_path))
    journal_at(journal_dir(), "vm1", Step.SHUTDOWN_REQUESTED, Step.SOURCE_STOPPED)
    src, dst = FakeHost("src"), FakeHost("dst")              # defined nowhere
    monkeypatch.setattr(finish, "cold_host_from", lambda d: SimpleNamespace(host={"src": src, "dst": dst}[d["name"]]))
    assert cmd_recover(argparse.Namespace(vm="vm1", json=False)) == 1
    out = capsys.readouterr().out
    assert "vm1: nothing done: the VM is defined on neither host" in out and "hint: " in out


# -- never delete the only good disk --------------------------------------------------------

class FakeAgent:
    """A disk helper: answers stat from ``files`` ({path: incomplete}), records removals."""

    def __init__(self, files, removed, boot_id):
        self.files, self.removed, self.info = files, removed, {"boot_id": boot_id}

    def call(self, op, **kw):
        if op == "stat":
            there = kw["path"] in self.files
            return [{"exists": there, "incomplete": there and self.files[kw["path"]], "dev": 1,
                     "ino": hash(kw["path"]) & 0xFFFF}]
        if op == "remove":
            self.removed.append(kw["path"])
            return [{}]
        raise AssertionError(op)


@pytest.fixture
def agents(monkeypatch):
    removed = []
    files = {DISK["src"]: False, DISK["dst"]: False}        # both copies whole unless a test says otherwise

    @contextlib.contextmanager
    def agent_for(side):
        yield FakeAgent(files, removed, boot_id=side.host.name)

    monkeypatch.setattr("labmig.cold.hostops.agent_for", agent_for)
    return files, removed


def test_confirm_started_with_the_destination_undefined_deletes_no_disk(tmp_path, agents):
    """The VM was moved back to the source by hand during a confirm with --delete-source-disks.

    Before the guard the plan defined it again on the destination and deleted the source
    disk: the only copy known to be good. Now nothing is done and the journal stays open.
    """
    _, removed = agents
    journal = journal_at(tmp_path, "vm1", Step.SOURCE_STOPPED, Step.DISK_COPYING, Step.DISK_COPIED,
                         Step.DEST_DEFINED, Step.SOURCE_UNDEFINED, Step.DEST_STARTED, Step.GUEST_UP,
                         Step.CONFIRM_STARTED, disks=[DISK], delete_source_disks=True)
    src, dst = FakeHost("src", vm1=True), FakeHost("dst")
    plan = recover_journal(journal, journal.state(), *sides(src, dst))
    assert plan.unknown and R.DELETE_SOURCE_DISKS not in plan.actions
    assert "not defined there any more" in plan.reason
    assert removed == [] and dst.defined_xml == [] and "vm1" not in dst.domains
    assert src.domains["vm1"].active and journal.state().last == Step.CONFIRM_STARTED


def test_confirm_started_with_an_incomplete_destination_disk_changes_nothing(tmp_path, agents):
    """The disk check runs before the first action: the source is not undefined either.

    Before the fix every `labmig recover` failed the same check again and the journal stayed
    at confirm-started for good (neither confirm nor revert would take it). Now the confirm is
    called off: the journal is back at awaiting confirm, and revert works.
    """
    files, removed = agents
    files[DISK["dst"]] = True                                  # marked incomplete
    journal = journal_at(tmp_path, "vm1", Step.SOURCE_STOPPED, Step.DISK_COPYING, Step.DISK_COPIED,
                         Step.DEST_DEFINED, Step.GUEST_UP, Step.CONFIRM_STARTED, disks=[DISK],
                         delete_source_disks=True)
    src, dst = FakeHost("src", vm1=False), FakeHost("dst", vm1=True)
    plan = recover_journal(journal, journal.state(), *sides(src, dst))
    assert "called off" in plan.reason and "incomplete" in plan.reason and "labmig revert vm1" in plan.hint
    assert plan.actions == [] and plan.final_step is None and not plan.unknown
    assert removed == [] and "vm1" in src.domains and "vm1" in dst.domains
    state = journal.state()
    assert state.awaiting_confirm and state.options["confirm_called_off"]
    again = recover_journal(journal, state, *sides(src, dst))      # a second recover: no error either
    assert again.target == "destination" and again.final_step is None
    assert removed == [] and journal.state().awaiting_confirm


def test_confirm_started_with_a_whole_destination_disk_deletes_the_source_disk(tmp_path, agents):
    _, removed = agents
    journal = journal_at(tmp_path, "vm1", Step.SOURCE_STOPPED, Step.DISK_COPYING, Step.DISK_COPIED,
                         Step.DEST_DEFINED, Step.SOURCE_UNDEFINED, Step.DEST_STARTED, Step.GUEST_UP,
                         Step.CONFIRM_STARTED, disks=[DISK], delete_source_disks=True)
    src, dst = FakeHost("src"), FakeHost("dst", vm1=True)
    plan = recover_journal(journal, journal.state(), *sides(src, dst))
    assert plan.target == "destination" and plan.final_step == Step.CONFIRMED
    assert removed == [DISK["src"]] and not journal.exists()
