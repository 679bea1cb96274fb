"""One labmig process at a time acts on a VM (labmig.vmlock), and VM names map to file names injectively.

The contention tests use real processes: a child takes a VM's lock and waits; this test
process then meets VMBusy naming the child's pid, and finds the lock free once the child
has ended (by itself, or SIGKILLed). ``recover()`` with no VM skips a journal whose VM is
locked; ColdMigration.run, confirm and LiveMigration refuse a locked VM before changing
anything. Lock files and journals live in the test's temporary directory
($LABMIG_LOCK_DIR, explicit journal directories).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
from fakehosts import FakeHost
from hypothesis import given
from hypothesis import strategies as st

from labmig.cold import finish
from labmig.cold.journal import Journal, JournalError, Step, all_journals
from labmig.fsutil import file_to_name, name_to_file
from labmig.vmlock import VMBusy, held_here, holder, lock_path, vm_lock

# A holder in another process: takes the lock, says so, and holds it until stdin closes
# or a line comes (or it is killed).
_HOLD = """
import sys
from labmig.vmlock import vm_lock
with vm_lock(sys.argv[1], command=sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


class OtherProcess:
    """A real process holding a VM's lock."""

    def __init__(self, vm: str, command: str = "labmig migrate cold") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD, vm, command], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "locked\n", self.proc.stderr.read()
        self.pid = self.proc.pid

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def other():
    started: list[OtherProcess] = []

    def start(vm: str, command: str = "labmig migrate cold") -> OtherProcess:
        started.append(OtherProcess(vm, command))
        return started[-1]

    yield start
    for p in started:
        p.close()


def _can_lock_elsewhere(vm: str) -> bool:
    """Whether another process could take the lock now (it takes it and lets go at once)."""
    code = "import sys\nfrom labmig.vmlock import vm_lock, VMBusy\ntry:\n    with vm_lock(sys.argv[1]): pass\n" \
           "except VMBusy:\n    sys.exit(3)\n"
    rc = subprocess.run([sys.executable, "-c", code, vm], timeout=30).returncode
    assert rc in (0, 3)
    return rc == 0


# -- two processes ---------------------------------------------------------------------
def test_a_second_process_is_refused_naming_the_first(other):
    first = other("guest1", "labmig migrate cold")
    with pytest.raises(VMBusy) as err:
        with vm_lock("guest1"):
            pytest.fail("took a lock another process holds")
    text = str(err.value)
    assert f"VM guest1 is being migrated by pid {first.pid} (labmig migrate cold, on " in text
    assert " since " in text and "hint:" in text and "labmig status" in text
    assert err.value.holder is not None and err.value.holder.pid == first.pid
    assert err.value.exit_code == 3
    assert holder("guest1").pid == first.pid
    first.release()
    with vm_lock("guest1"):
        assert held_here("guest1")
    assert holder("guest1") is None


def test_the_lock_of_a_killed_process_is_free(other):
    first = other("guest1")
    assert not _can_lock_elsewhere("guest1")
    first.kill()
    assert holder("guest1") is None           # its record names a dead pid
    with vm_lock("guest1"):
        assert not _can_lock_elsewhere("guest1")
        assert holder("guest1").pid == os.getpid()


def test_other_vms_are_not_held(other):
    other("guest1")
    with vm_lock("guest2"), vm_lock("guest1 "), vm_lock("guest1_"):
        pass


# -- within one process ----------------------------------------------------------------
def test_the_lock_is_reentrant_within_a_process():
    with vm_lock("guest1"):
        with vm_lock("guest1"):                # e.g. ColdMigration.run calling confirm()
            assert not _can_lock_elsewhere("guest1")
        assert held_here("guest1")
        assert not _can_lock_elsewhere("guest1")   # the outer block still holds it
    assert not held_here("guest1")
    assert _can_lock_elsewhere("guest1")


def test_the_lock_is_released_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with vm_lock("guest1"):
            raise RuntimeError("boom")
    assert not held_here("guest1") and _can_lock_elsewhere("guest1")


# -- names -----------------------------------------------------------------------------
TRICKY = ["web 1", "web_1", "web%201", "web%1", "a/b", "a%2Fb", ".", "..", "...", "-", "x\x00y",
          "é", "e\u0301", "web\n1", "%", "%%", "A", "a", "_", "@", "+", "vm@x", "vm_x"]


def test_tricky_names_get_distinct_safe_file_names(lock_dir):
    files = [name_to_file(n) for n in TRICKY]
    assert len(set(files)) == len(TRICKY)
    for name, f in zip(TRICKY, files, strict=True):
        assert "/" not in f and "\x00" not in f and f
        assert file_to_name(f) == name
        assert lock_path(name).parent.parent == lock_dir and lock_path(name).name == f + ".lock"
    assert name_to_file("web 1") == "web%201" and name_to_file("web_1") == "web_1"


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_name_mapping_is_injective(a, b):
    fa, fb = name_to_file(a), name_to_file(b)
    assert (fa == fb) == (a == b)
    for name, f in ((a, fa), (b, fb)):
        assert "/" not in f and "\x00" not in f
        assert file_to_name(f) == name


def test_web_1_and_web_underscore_1_keep_two_journals(tmp_path):
    for vm in ("web 1", "web_1"):
        Journal(vm, tmp_path).begin({"vm": vm})
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["web%201.jsonl", "web_1.jsonl"]
    assert {j.vm: j.state().plan["vm"] for j in all_journals(tmp_path)} == {"web 1": "web 1", "web_1": "web_1"}


def test_a_journal_under_the_old_name_is_still_found(tmp_path):
    old = Journal("web 1", tmp_path, path=tmp_path / "web_1.jsonl")   # the old mapping's file name
    old.crash_hook = None
    old.append(Step.BEGIN, vm="web 1")
    old.append(Step.SOURCE_STOPPED)
    again = Journal("web 1", tmp_path)
    assert again.path == tmp_path / "web_1.jsonl" and again.state().last == Step.SOURCE_STOPPED
    assert [(j.vm, j.path.name) for j in all_journals(tmp_path)] == [("web 1", "web_1.jsonl")]
    with pytest.raises(JournalError, match="belongs to VM 'web 1'"):
        Journal("web_1", tmp_path)                      # today's name of web_1, taken by the old file
    again.append(Step.ROLLBACK_STARTED)
    again.append(Step.ROLLED_BACK)
    again.begin({"vm": "web 1"})                        # a new run archives it and starts under the new name
    assert again.path == tmp_path / "web%201.jsonl" and again.state().last == Step.BEGIN
    assert not (tmp_path / "web_1.jsonl").exists()
    assert Journal("web_1", tmp_path).state() is None   # the name is free again


# -- recover, confirm, ColdMigration.run, LiveMigration ---------------------------------
def _half_done(tmp_path, vm):
    """A cold migration of ``vm`` killed after the source was stopped, written by the real Journal."""
    journal = Journal(vm, tmp_path)
    journal.crash_hook = None
    journal.begin({"vm": vm, "was_running": True, "source": {"name": "src"}, "destination": {"name": "dst"},
                   "source_xml": f"<domain>{vm}</domain>", "dest_xml": f"<domain>{vm}</domain>", "disks": []})
    journal.append(Step.SHUTDOWN_REQUESTED)
    journal.append(Step.SOURCE_STOPPED)
    return journal


@pytest.fixture
def hosts(monkeypatch):
    src, dst = FakeHost("src", vm1=False, vm2=False), FakeHost("dst")
    monkeypatch.setattr(finish, "cold_host_from", lambda d: SimpleNamespace(host={"src": src, "dst": dst}[d["name"]]))
    return src, dst


def test_recover_skips_a_journal_whose_vm_is_locked_then_recovers_it(tmp_path, other, hosts):
    src, _ = hosts
    j1, j2 = _half_done(tmp_path, "vm1"), _half_done(tmp_path, "vm2")
    first = other("vm1")
    done = {d.vm: d for d in finish.recover(journal_dir=tmp_path)}
    assert done["vm1"].target == "nothing" and done["vm1"].reason.startswith(
        f"skipped: being migrated by pid {first.pid} (labmig migrate cold, on ")
    assert f"being migrated by pid {first.pid}" in done["vm1"].words()
    assert j1.exists() and j1.state().last == Step.SOURCE_STOPPED     # left to its migration
    assert not src.domains["vm1"].active
    assert done["vm2"].target == "source" and not j2.exists() and src.domains["vm2"].active
    with pytest.raises(VMBusy, match=f"pid {first.pid}"):
        finish.recover("vm1", journal_dir=tmp_path)                     # named: refused
    first.release()
    done = finish.recover(journal_dir=tmp_path)
    assert [(d.vm, d.target) for d in done] == [("vm1", "source")]
    assert not j1.exists() and src.domains["vm1"].active


def test_recover_skips_a_vm_this_process_is_migrating(tmp_path, hosts):
    j1 = _half_done(tmp_path, "vm1")
    with vm_lock("vm1"):                        # a migration in another thread of this process
        done = finish.recover(journal_dir=tmp_path)
        assert [(d.vm, d.target) for d in done] == [("vm1", "nothing")]
        assert done[0].reason.startswith(f"skipped: being migrated by pid {os.getpid()}")
        assert j1.exists()


def test_confirm_and_revert_are_refused_while_another_process_holds_the_vm(tmp_path, other):
    first = other("vm1")
    for act in (lambda: finish.confirm("vm1", journal_dir=tmp_path), lambda: finish.revert("vm1", journal_dir=tmp_path)):
        with pytest.raises(VMBusy, match=f"pid {first.pid}"):
            act()
    first.release()
    with pytest.raises(JournalError, match="awaiting confirm"):      # past the lock: nothing to confirm
        finish.confirm("vm1", journal_dir=tmp_path)
    with vm_lock("vm1"), pytest.raises(JournalError, match="awaiting confirm"):   # re-entrant
        finish.confirm("vm1", journal_dir=tmp_path)


def _cold_migration(tmp_path, monkeypatch, calls):
    from labmig.cold.migration import ColdMigration, ColdPlan

    def precheck(self):
        calls.append("precheck")
        raise RuntimeError("stop here")

    monkeypatch.setattr(ColdMigration, "precheck", precheck)
    mig = ColdMigration(ColdPlan("vm1", "src", "dst"), source=SimpleNamespace(), destination=SimpleNamespace(),
                        journal_dir=tmp_path)
    return mig


def test_a_cold_migration_is_refused_before_it_changes_anything(tmp_path, monkeypatch, other):
    calls: list[str] = []
    mig = _cold_migration(tmp_path, monkeypatch, calls)
    first = other("vm1")
    with pytest.raises(VMBusy, match=f"VM vm1 is being migrated by pid {first.pid}"):
        mig.run()
    assert calls == [] and not mig.journal.exists()        # not even a pre-check
    _half_done(tmp_path, "vm1")                             # an unfinished journal it would recover first
    with pytest.raises(VMBusy, match=f"VM vm1 is being migrated by pid {first.pid}"):
        mig.run()
    assert calls == [] and mig.journal.state().last == Step.SOURCE_STOPPED   # nothing recovered
    first.release()
    mig.journal.archive()
    with pytest.raises(RuntimeError, match="stop here"):
        mig.run()                                           # the lock is free: on to the pre-checks
    assert calls == ["precheck"]
    assert not held_here("vm1")


def test_a_live_migration_is_refused_before_its_prechecks(monkeypatch, other):
    from labmig.live.migration import LiveMigration
    from labmig.live.plan import LivePlan

    calls: list[str] = []
    monkeypatch.setattr(LiveMigration, "prepare", lambda self: calls.append("prepare"))
    host = SimpleNamespace(name="h", close=lambda: None)
    first = other("vm1", "labmig migrate live")
    mig = LiveMigration(LivePlan("vm1", "src", "dst"), source=host, destination=host)
    with pytest.raises(VMBusy, match=rf"pid {first.pid} \(labmig migrate live"):
        with mig:
            pass
    with pytest.raises(VMBusy):
        mig.run()
    assert calls == []
    first.release()
    with mig:
        assert calls == ["prepare"] and held_here("vm1")
    assert not held_here("vm1")
