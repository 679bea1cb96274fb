"""What to do with a cold migration that stopped halfway: a pure decision, then its execution.

    Observed         where the domain is defined / running right now (read from both hosts)
    RecoveryPlan     the target ("source", "destination", "nothing" or "unknown"), the
                     ordered actions, the final record; ``hint`` says what to check
    plan_recovery()  journal state + observation -> RecoveryPlan (no I/O; unit-tested exhaustively)
    unexpected()     why an observation fits no state the journal allows, or None

The rule, like Nova's resize flow: until the guest has answered on the destination
the migration is rolled back (the destination copy is undefined, the untouched
source is defined again and started if it was running); from then on the VM stays
on the destination awaiting confirm; a started confirm or revert is finished.
Destination disk files are kept after a rollback: they seed the next attempt's
delta copy, and are marked incomplete until a copy verifies.

No action on an unknown state: when the hosts show something the journal cannot
explain (the VM running on both hosts, defined on neither, running on the source
after it had moved, not defined on the destination once the guest was up there,
defined on the destination before labmig defined it), someone acted by hand or
another tool did. The plan is then "unknown": no action, no final record, the
journal left open, and words for what was seen and what a person should check.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .journal import JournalState, Step

# Action names, executed in order by ColdMigration's host operations.
DESTROY_DEST = "destroy-destination"
UNDEFINE_DEST = "undefine-destination"
DEFINE_SOURCE = "define-source"
START_SOURCE = "start-source"
DESTROY_SOURCE = "destroy-source"
UNDEFINE_SOURCE = "undefine-source"
DEFINE_DEST = "define-destination"
START_DEST = "start-destination"
DELETE_SOURCE_DISKS = "delete-source-disks"


@dataclass(frozen=True)
class Observed:
    src_defined: bool
    src_active: bool
    dst_defined: bool
    dst_active: bool


@dataclass
class RecoveryPlan:
    target: str                       # "source" | "destination" | "nothing" | "unknown"
    actions: list[str] = field(default_factory=list)
    final_step: str | None = None     # journal record written when the actions are done
    reason: str = ""
    hint: str = ""                    # for "unknown": what a person should check

    @property
    def unknown(self) -> bool:
        return self.target == "unknown"


def seen(obs: Observed) -> str:
    """An observation in words: "defined and running on the source, not defined on the destination"."""
    def one(defined: bool, active: bool, where: str) -> str:
        if not defined:
            return f"not defined on the {where}"
        return f"{'running' if active else 'defined, shut off,'} on the {where}"
    return f"{one(obs.src_defined, obs.src_active, 'source')}, {one(obs.dst_defined, obs.dst_active, 'destination')}"


def unexpected(state: JournalState, obs: Observed) -> str | None:
    """Why ``obs`` fits no host state the journal's last step allows (None when it fits)."""
    last = state.last
    if obs.src_active and obs.dst_active:
        return "the VM runs on both hosts"
    if last in (Step.GUEST_UP, Step.CONFIRM_STARTED):
        if not obs.dst_defined:
            return "the guest was up on the destination, but it is not defined there any more"
        if obs.src_active:
            return "the VM runs on the source although the migration had moved it"
        return None
    if not obs.src_defined and not obs.dst_defined:
        # Only a rollback or revert, between undefining the destination and defining the
        # source again, leaves it nowhere; and only once the source had been undefined.
        if last in (Step.ROLLBACK_STARTED, Step.REVERT_STARTED) and state.reached(Step.SOURCE_UNDEFINED):
            return None
        return "the VM is defined on neither host"
    if obs.dst_defined and not state.reached(Step.DEST_DEFINED):
        return "the VM is defined on the destination, but labmig had not defined it there"
    if not obs.src_defined and not state.reached(Step.SOURCE_UNDEFINED):
        return "the VM is not defined on the source, but labmig had not undefined it there"
    return None


def plan_recovery(state: JournalState | None, obs: Observed) -> RecoveryPlan:
    """Decide how to bring the VM to exactly one host; an "unknown" plan (no action) when ``obs`` does not fit."""
    if state is None or state.finished:
        return RecoveryPlan("nothing", reason="no unfinished migration")
    last = state.last
    why = unexpected(state, obs)
    if why is not None:
        return RecoveryPlan(
            "unknown", reason=f"nothing done: {why} (seen: {seen(obs)}; the journal stops at '{last}')",
            hint="someone or something else acted on the VM: check on both hosts which copy is the one to "
                 "keep and that its disks are whole, stop and undefine the other, then run `labmig recover` "
                 "again (or move the journal away to forget that migration)")
    was_running = bool(state.plan.get("was_running", True))
    if last == Step.CONFIRM_STARTED:
        return _to_destination(obs, was_running, Step.CONFIRMED, "a confirm was under way: finishing it",
                               delete=bool(state.options.get("delete_source_disks")))
    if last == Step.GUEST_UP:
        return _to_destination(obs, was_running, None, "the guest was up on the destination: awaiting confirm")
    if last == Step.REVERT_STARTED:
        return _to_source(obs, was_running, Step.REVERTED, "a revert was under way: finishing it")
    if last == Step.ROLLBACK_STARTED:
        return _to_source(obs, was_running, Step.ROLLED_BACK, "a rollback was under way: finishing it")
    return _to_source(obs, was_running, Step.ROLLED_BACK,
                      f"the migration stopped at '{last}', before the guest was up on the destination: rolling back")


def _to_source(obs: Observed, was_running: bool, final: str, reason: str) -> RecoveryPlan:
    actions = []
    if obs.dst_active:
        actions.append(DESTROY_DEST)
    if obs.dst_defined:
        actions.append(UNDEFINE_DEST)
    if not obs.src_defined:
        actions.append(DEFINE_SOURCE)
    if was_running and not obs.src_active:
        actions.append(START_SOURCE)
    return RecoveryPlan("source", actions, final, reason)


def _to_destination(obs: Observed, was_running: bool, final: str | None, reason: str,
                    delete: bool = False) -> RecoveryPlan:
    # unexpected() has made sure: defined on the destination, not running on the source.
    actions = []
    if was_running and not obs.dst_active:
        actions.append(START_DEST)
    if obs.src_defined:
        actions.append(UNDEFINE_SOURCE)
    if delete:
        actions.append(DELETE_SOURCE_DISKS)
    return RecoveryPlan("destination", actions, final, reason)
