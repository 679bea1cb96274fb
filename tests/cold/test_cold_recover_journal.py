"""The recovery sequence every path shares (rollback, confirm, revert, `labmig recover`).

``hostops.recover_journal`` reads where the VM is, decides with ``plan_recovery``, acts,
then records the final step and archives the journal. Here the two hosts are in-memory
stand-ins for libvirt (tests/fakehosts.py) (the decision itself is tested exhaustively in test_cold_recovery).
"""
from types import SimpleNamespace

from fakehosts import FakeHost

from labmig.cold.hostops import recover_journal
from labmig.cold.journal import Journal, Step


def journal_at(tmp_path, *steps):
    journal = Journal("vm1", tmp_path)
    journal.begin({"vm": "vm1", "was_running": True, "source_xml": "<domain>source</domain>",
                   "dest_xml": "<domain>dest</domain>", "disks": []})
    for step in steps:
        journal.append(step)
    journal.crash_hook = None
    return journal


def test_a_rollback_puts_the_vm_back_on_the_source_and_archives_the_journal(tmp_path):
    journal = journal_at(tmp_path, Step.SOURCE_STOPPED, Step.DEST_DEFINED, Step.SOURCE_UNDEFINED,
                         Step.DEST_STARTED, Step.ROLLBACK_STARTED)
    src, dst = FakeHost("src", define_as="vm1"), FakeHost("dst", define_as="vm1", vm1=True)
    plan = recover_journal(journal, journal.state(), SimpleNamespace(host=src), SimpleNamespace(host=dst))
    assert plan.target == "source" and plan.final_step == Step.ROLLED_BACK
    assert dst.domains == {}
    assert src.defined_xml == ["<domain>source</domain>"] and src.domains["vm1"].active
    assert not journal.exists()
    archived = list((tmp_path / "history").glob("*.jsonl"))
    assert len(archived) == 1 and '"step":"rolled-back"' in archived[0].read_text().splitlines()[-1]


def test_awaiting_confirm_keeps_the_journal_open(tmp_path):
    journal = journal_at(tmp_path, Step.SOURCE_STOPPED, Step.DEST_DEFINED, Step.SOURCE_UNDEFINED,
                         Step.DEST_STARTED, Step.GUEST_UP)
    src, dst = FakeHost("src", define_as="vm1"), FakeHost("dst", define_as="vm1", vm1=False)
    plan = recover_journal(journal, journal.state(), SimpleNamespace(host=src), SimpleNamespace(host=dst))
    assert plan.target == "destination" and plan.final_step is None
    assert dst.domains["vm1"].active            # started again where the guest was up
    assert journal.exists() and journal.state().last == Step.GUEST_UP
