"""The cold-migration journal: durable records, torn last line, archive, refusals."""
import json

import pytest

from labmig.cold.journal import Journal, JournalError, Step, all_journals


def test_records_round_trip_and_state(tmp_path):
    j = Journal("vm1", tmp_path)
    j.begin({"vm": "vm1", "was_running": True, "disks": [{"src": "/a", "dst": "/b"}]})
    j.append(Step.SHUTDOWN_REQUESTED)
    j.append(Step.SOURCE_STOPPED)
    j.append(Step.DISK_COPYING, dst="/b")
    j.append(Step.DISK_COPIED, dst="/b", digest="ab")
    st = j.state()
    assert st.last == Step.DISK_COPIED
    assert st.plan["disks"][0]["dst"] == "/b"
    assert st.disks_copied == ["/b"]
    assert not st.finished and not st.awaiting_confirm
    assert st.reached(Step.SOURCE_STOPPED) and not st.reached(Step.DEST_DEFINED)


def test_torn_last_line_is_ignored(tmp_path):
    j = Journal("vm1", tmp_path)
    j.begin({"vm": "vm1"})
    j.append(Step.SHUTDOWN_REQUESTED)
    with open(j.path, "ab") as f:
        f.write(b'{"step":"source-sto')  # a crash in the middle of a write
    assert j.state().last == Step.SHUTDOWN_REQUESTED


def test_damage_in_the_middle_is_an_error(tmp_path):
    j = Journal("vm1", tmp_path)
    j.begin({"vm": "vm1"})
    with open(j.path, "ab") as f:
        f.write(b"garbage\n")
    j.append(Step.SHUTDOWN_REQUESTED)
    with pytest.raises(JournalError) as info:
        j.state()
    assert "line 2" in str(info.value) and info.value.hint


def test_unfinished_journal_refuses_a_new_begin_and_finished_one_is_archived(tmp_path):
    j = Journal("vm1", tmp_path)
    j.begin({"vm": "vm1"})
    with pytest.raises(JournalError) as info:
        j.begin({"vm": "vm1"})
    assert "labmig recover" in info.value.hint
    j.append(Step.ROLLED_BACK)
    j.begin({"vm": "vm1", "n": 2})
    assert j.state().plan["n"] == 2
    assert len(list((tmp_path / "history").iterdir())) == 1


def test_journals_archived_in_the_same_second_are_all_kept(tmp_path, monkeypatch):
    """A round trip with --confirm archives two journals of one VM within a second, in one
    process; before the fix the second took the first one's history name and replaced it."""
    monkeypatch.setattr("time.strftime", lambda fmt, *a: "20261202T120000")
    j = Journal("vm1", tmp_path)
    for n in range(3):
        j.begin({"vm": "vm1", "n": n})
        j.append(Step.CONFIRMED)
        j.archive()
    history = sorted((tmp_path / "history").iterdir())
    assert len(history) == 3
    assert sorted(json.loads(p.read_text().splitlines()[0])["data"]["n"] for p in history) == [0, 1, 2]
    assert not j.path.exists()


def test_every_append_is_on_disk_before_the_hook_runs(tmp_path):
    seen = []
    j = Journal("vm1", tmp_path)

    def hook(step):
        # What a crash right now would leave behind: the record must already be there.
        last = json.loads(j.path.read_text().strip().split("\n")[-1])
        seen.append((step, last["step"]))

    j.crash_hook = hook
    j.begin({"vm": "vm1"})
    j.append(Step.SHUTDOWN_REQUESTED)
    assert seen == [(Step.BEGIN, Step.BEGIN), (Step.SHUTDOWN_REQUESTED, Step.SHUTDOWN_REQUESTED)]


def test_unknown_step_and_bad_names(tmp_path):
    with pytest.raises(ValueError):
        Journal("vm1", tmp_path).append("teleport")
    with pytest.raises(Exception):
        Journal("../etc", tmp_path)


def test_all_journals_lists_by_vm_name(tmp_path):
    for name in ("a", "b"):
        Journal(name, tmp_path).begin({"vm": name})
    assert sorted(j.vm for j in all_journals(tmp_path)) == ["a", "b"]


def test_lab_scope_keeps_journals_apart(tmp_path, monkeypatch):
    from labmig.cold.journal import journal_dir
    monkeypatch.setenv("LABMIG_JOURNAL_DIR", str(tmp_path))
    monkeypatch.setenv("LABMIG_LAB", "cold")
    a = journal_dir()
    monkeypatch.setenv("LABMIG_LAB", "live")
    assert journal_dir() != a and a.parent == journal_dir().parent


def test_a_short_write_is_finished_not_left_torn(tmp_path, monkeypatch):
    """os.write may write part of a record; before, the rest was dropped and the next record
    glued onto the half line. Now the write goes on until the whole record is on disk."""
    import os as _os

    real_write = _os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data[:7]))         # at most 7 bytes per call

    j = Journal("vm1", tmp_path)
    j.begin({"vm": "vm1"})
    monkeypatch.setattr("labmig.cold.journal.os.write", short_write)
    j.append(Step.SHUTDOWN_REQUESTED, note="x" * 50)
    j.append(Step.SOURCE_STOPPED)
    monkeypatch.undo()
    assert j.state().steps == [Step.BEGIN, Step.SHUTDOWN_REQUESTED, Step.SOURCE_STOPPED]
    assert j.records()[1]["data"]["note"] == "x" * 50
