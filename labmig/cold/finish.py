"""Finish a cold migration: confirm, revert, or recover one that labmig left halfway.

    confirm(vm)   the VM stays on the destination; the source's saved definition is
                  dropped, and with ``delete_source_disks`` its disk files are removed
                  (refused, nothing deleted, unless each destination copy exists, is
                  complete and is another file: hostops.check_source_disks_deletable)
    revert(vm)    the VM goes back to the source, untouched since it was shut down;
                  the destination's definition goes (its disk files stay as a seed for
                  the next attempt's delta copy)
    recover(vm=None)  every unfinished journal (or one VM's) brought to its end state
                  by :func:`labmig.cold.recovery.plan_recovery`; returns what was done,
                  one Finished per journal
    Finished      one journal's outcome; ``failed`` when nothing could be done: the
                  hosts showed a state the journal does not allow (target "unknown"),
                  or the journal could not be read or recovered (target "error")

Each writes its intention to the journal before acting, so a crash in the middle of
a confirm or revert is itself finished by the next ``recover``.

Each holds the VM's lock (labmig.vmlock) while it acts, and a VM another process holds
is refused (VMBusy). ``recover()`` with no VM named skips every journal whose VM is
locked, by another process or by this one (a migration in another thread): it reports
it as "skipped: being migrated by pid N …" and leaves the journal to its migration.
A journal that cannot be read or recovered does not stop the others: it is reported
(target "error", with the reason) and the next journal is recovered.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Concatenate, ParamSpec, TypeVar

from ..errors import LabmigError
from ..vmlock import VMBusy, held_here, holder, vm_lock
from .hostops import agent_for, check_source_disks_deletable, recover_journal
from .journal import Journal, JournalError, JournalState, Step, all_journals
from .sides import cold_host_from

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _locked(fn: Callable[Concatenate[str, _P], _T]) -> Callable[Concatenate[str, _P], _T]:
    """Run ``fn(vm, ...)`` holding the VM's lock (re-entrant: a migration of this process may hold it)."""
    @functools.wraps(fn)
    def locked(vm: str, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with vm_lock(vm):
            return fn(vm, *args, **kwargs)
    return locked


@dataclass
class Finished:
    vm: str
    target: str                  # "source", "destination", "nothing"
    final_step: str | None
    reason: str
    actions: list[str] = field(default_factory=list)
    hint: str = ""               # for a failed one: what to check or do
    where: str = ""              # where the VM is, as both hosts said afterwards (labmig.placement)

    @property
    def failed(self) -> bool:
        return self.target in ("unknown", "error")

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "target": self.target, "final_step": self.final_step,
                "reason": self.reason, "actions": self.actions, "failed": self.failed, "hint": self.hint, "where": self.where}

    def words(self) -> str:
        where = {"source": "on its source host", "destination": "on the destination host"}.get(self.target, "")
        done = f" ({', '.join(self.actions)})" if self.actions else ""
        hint = f"\n  hint: {self.hint}" if self.hint else ""
        if self.where:
            return f"{self.vm}: {self.reason}{done}; where it is now: {self.where}{hint}"
        return f"{self.vm}: {self.reason}{done}" + (f"; now {where}" if where else "") + hint


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
    done = _recover(journal, state)
    if done.failed:
        raise JournalError(f"{done.vm}: {done.reason}", done.hint)
    return done


def _recover(journal: Journal, state: JournalState) -> Finished:
    """Recover one unfinished journal on the hosts its plan names, closing them after."""
    from ..placement import observe

    src, dst = cold_host_from(state.plan["source"]), cold_host_from(state.plan["destination"])
    try:
        rplan = recover_journal(journal, state, src, dst)
        where = observe(state.vm, [src.host, dst.host]).words()
    finally:
        src.host.close()
        dst.host.close()
    return Finished(state.vm, rplan.target, rplan.final_step, rplan.reason, rplan.actions, rplan.hint, where)


@_locked
def confirm(vm: str, delete_source_disks: bool = False,
            journal_dir: str | os.PathLike[str] | None = None) -> Finished:
    journal, state = _awaiting(vm, journal_dir)
    if delete_source_disks:
        _check_deletion(state)   # refused here, the VM still awaits confirm and nothing changed
    done = _finish(journal, Step.CONFIRM_STARTED, delete_source_disks=delete_source_disks)
    done.reason = "confirmed" + (": source disks deleted" if delete_source_disks else "")
    return done


def _check_deletion(state: JournalState) -> None:
    """Every local disk's destination copy must exist, be complete and be another file (hostops)."""
    local = [disk for disk in state.plan.get("disks", []) if disk.get("kind") == "local"]
    if not local:
        return
    src, dst = cold_host_from(state.plan["source"]), cold_host_from(state.plan["destination"])
    with agent_for(src) as src_agent, agent_for(dst) as dst_agent:
        check_source_disks_deletable(local, src_agent, dst_agent)


@_locked
def revert(vm: str, journal_dir: str | os.PathLike[str] | None = None) -> Finished:
    journal, _ = _awaiting(vm, journal_dir)
    done = _finish(journal, Step.REVERT_STARTED)
    done.reason = "reverted: running from its untouched source disk"
    return done


def recover(vm: str | None = None, journal_dir: str | os.PathLike[str] | None = None) -> list[Finished]:
    """Finish ``vm``'s journal (holding its lock), or every journal whose VM no one holds.

    With no VM, a journal that cannot be read or recovered is reported (target "error",
    the reason in words) and the others are still recovered; with a VM, its error is raised.
    """
    if vm:
        with vm_lock(vm):
            return _recover_journals([Journal(vm, journal_dir)])
    out = []
    for journal in all_journals(journal_dir):
        try:
            if held_here(journal.vm):   # a migration in another thread of this process
                raise VMBusy(journal.vm, holder(journal.vm))
            with vm_lock(journal.vm):
                out.extend(_recover_journals([journal]))
        except VMBusy as exc:
            try:
                state = journal.state()
            except JournalError:
                state = None
            if state is None or not state.finished:
                by = exc.holder.words() if exc.holder else "another labmig process"
                log.info("recover: %s is locked by %s: skipped", journal.vm, by)
                out.append(Finished(journal.vm, "nothing", state.last if state else None,
                                    f"skipped: being migrated by {by}"))
        except Exception as exc:        # reported; the other journals are still recovered
            log.debug("recover: %s failed", journal.path, exc_info=True)
            out.append(_failure(journal, exc))
    return out


def _failure(journal: Journal, exc: Exception) -> Finished:
    """A journal that could not be recovered, in words: which file, why, what to do."""
    if isinstance(exc, LabmigError):
        why, hint = exc.message, exc.hint or ""
    else:
        why, hint = f"{type(exc).__name__}: {exc}", "`labmig -vv recover` shows where it failed"
    if str(journal.path) not in why:
        why = f"{why} (journal {journal.path})"
    return Finished(journal.vm, "error", None, f"not recovered: {why}", hint=hint)


def _recover_journals(journals: list[Journal]) -> list[Finished]:
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
