"""Finish a cold migration: confirm, revert, or recover one that labmig left halfway.

    confirm(vm)   the VM stays on the destination; the source's saved definition is
                  dropped, and with ``delete_source_disks`` its disk files are removed
    revert(vm)    the VM goes back to the source, untouched since it was shut down;
                  the destination's definition goes (its disk files stay as a seed for
                  the next attempt's delta copy)
    recover(vm=None)  every unfinished journal (or one VM's) brought to its end state
                  by :func:`labmig.cold.recovery.plan_recovery`; returns what was done

Each writes its intention to the journal before acting, so a crash in the middle of
a confirm or revert is itself finished by the next ``recover``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .hostops import recover_journal
from .journal import Journal, JournalError, JournalState, Step, all_journals
from .sides import cold_host_from

log = logging.getLogger(__name__)


@dataclass
class Finished:
    vm: str
    target: str                  # "source", "destination", "nothing"
    final_step: str | None
    reason: str
    actions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "target": self.target, "final_step": self.final_step,
                "reason": self.reason, "actions": self.actions}

    def words(self) -> str:
        where = {"source": "on its source host", "destination": "on the destination host"}.get(self.target, "")
        done = f" ({', '.join(self.actions)})" if self.actions else ""
        return f"{self.vm}: {self.reason}{done}" + (f"; now {where}" if where else "")


def _awaiting(vm: str, journal_dir: str | os.PathLike[str] | None) -> tuple[Journal, JournalState]:
    journal = Journal(vm, journal_dir)
    state = journal.state()
    if state is None or state.finished:
        raise JournalError(f"no cold migration of {vm} is awaiting confirm",
                           "`labmig migrate cold VM --to HOST` starts one")
    if not state.awaiting_confirm:
        raise JournalError(f"the cold migration of {vm} stopped at '{state.last}', it is not awaiting confirm",
                           "run `labmig recover` first")
    return journal, state


def _finish(journal: Journal, step: str, **data: Any) -> Finished:
    journal.append(step, **data)
    state = journal.state()
    assert state is not None  # the record just written
    return _recover(journal, state)


def _recover(journal: Journal, state: JournalState) -> Finished:
    """Recover one unfinished journal on the hosts its plan names, closing them after."""
    src, dst = cold_host_from(state.plan["source"]), cold_host_from(state.plan["destination"])
    try:
        rplan = recover_journal(journal, state, src, dst)
    finally:
        src.host.close()
        dst.host.close()
    return Finished(state.vm, rplan.target, rplan.final_step, rplan.reason, rplan.actions)


def confirm(vm: str, delete_source_disks: bool = False,
            journal_dir: str | os.PathLike[str] | None = None) -> Finished:
    journal, _ = _awaiting(vm, journal_dir)
    done = _finish(journal, Step.CONFIRM_STARTED, delete_source_disks=delete_source_disks)
    done.reason = "confirmed" + (": source disks deleted" if delete_source_disks else "")
    return done


def revert(vm: str, journal_dir: str | os.PathLike[str] | None = None) -> Finished:
    journal, _ = _awaiting(vm, journal_dir)
    done = _finish(journal, Step.REVERT_STARTED)
    done.reason = "reverted: running from its untouched source disk"
    return done


def recover(vm: str | None = None, journal_dir: str | os.PathLike[str] | None = None) -> list[Finished]:
    journals = [Journal(vm, journal_dir)] if vm else all_journals(journal_dir)
    out = []
    for journal in journals:
        state = journal.state()
        if state is None:
            continue
        if state.finished:
            journal.archive()
            continue
        out.append(_recover(journal, state))
    return out
