"""What to do with a cold migration that stopped halfway: a pure decision, then its execution.

    Observed         where the domain is defined / running right now (read from both hosts)
    RecoveryPlan     the target ("source" or "destination"), the ordered actions, the final record
    plan_recovery()  journal state + observation -> RecoveryPlan (no I/O; unit-tested exhaustively)

The rule, like Nova's resize flow: until the guest has answered on the destination
the migration is rolled back (the destination copy is undefined, the untouched
source is defined again and started if it was running); from then on the VM stays
on the destination awaiting confirm; a started confirm or revert is finished.
Destination disk files are kept after a rollback: they seed the next attempt's
delta copy, and are marked incomplete until a copy verifies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .journal import JournalError, JournalState, Step

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
    target: str                       # "source" | "destination" | "nothing"
    actions: list[str] = field(default_factory=list)
    final_step: str | None = None     # journal record written when the actions are done
    reason: str = ""


def plan_recovery(state: JournalState | None, obs: Observed) -> RecoveryPlan:
    """Decide how to bring the VM to exactly one host. Raises JournalError on a conflict."""
    if state is None or state.finished:
        return RecoveryPlan("nothing", reason="no unfinished migration")
    was_running = bool(state.plan.get("was_running", True))
    last = state.last
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
    if obs.src_active and obs.dst_active:
        raise JournalError("the VM runs on both hosts",
                           "stop the copy you do not want, then run `labmig recover` again")
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
    if obs.src_active:
        # The journal says the source was stopped and undefined past this point: a running
        # source means someone started it by hand, and its disk may have moved on.
        raise JournalError("the VM runs on the source although the migration had moved it",
                           "decide which copy to keep, stop the other, then run `labmig recover` again")
    actions = []
    if not obs.dst_defined:
        actions.append(DEFINE_DEST)
    if was_running and not obs.dst_active:
        actions.append(START_DEST)
    if obs.src_defined:
        actions.append(UNDEFINE_SOURCE)
    if delete:
        actions.append(DELETE_SOURCE_DISKS)
    return RecoveryPlan("destination", actions, final, reason)
