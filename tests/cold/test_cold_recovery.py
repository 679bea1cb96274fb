"""The recovery decision, over every journal position and every observable host state."""
import itertools

import pytest

from labmig.cold import recovery as R
from labmig.cold.journal import JournalState, Step

OBSERVATIONS = [R.Observed(*bits) for bits in itertools.product([False, True], repeat=4)
                if not (bits[1] and not bits[0]) and not (bits[3] and not bits[2])]  # active implies defined


def state_at(step, was_running=True, **options):
    flow = list(Step.FLOW)
    steps = flow[: flow.index(step) + 1] if step in flow else flow + [step]
    return JournalState(vm="vm", plan={"was_running": was_running}, steps=steps, options=options)


def apply(obs, actions):
    """A tiny model of two libvirt hosts, to check where the plan leaves the VM."""
    s = dict(sd=obs.src_defined, sa=obs.src_active, dd=obs.dst_defined, da=obs.dst_active)
    for a in actions:
        if a == R.DESTROY_DEST:
            assert s["da"]
            s["da"] = False
        elif a == R.UNDEFINE_DEST:
            assert s["dd"] and not s["da"]
            s["dd"] = False
        elif a == R.DEFINE_SOURCE:
            assert not s["sd"]
            s["sd"] = True
        elif a == R.START_SOURCE:
            assert s["sd"] and not s["sa"]
            s["sa"] = True
        elif a == R.DEFINE_DEST:
            assert not s["dd"]
            s["dd"] = True
        elif a == R.START_DEST:
            assert s["dd"] and not s["da"]
            s["da"] = True
        elif a == R.UNDEFINE_SOURCE:
            assert s["sd"] and not s["sa"]
            s["sd"] = False
        elif a == R.DELETE_SOURCE_DISKS:
            assert not s["sd"]
    return s


def allowed(step, obs):
    """Whether the journal, stopped at ``step``, can explain ``obs`` (written from the flow's order).

    The forward flow defines on the destination after DEST_DEFINED and undefines the source after
    SOURCE_UNDEFINED; a rollback or revert undefines the destination before defining the source
    again, so only it leaves the VM defined nowhere, and only once the source had been undefined.
    """
    if obs.src_active and obs.dst_active:
        return False
    if step in (Step.GUEST_UP, Step.CONFIRM_STARTED):
        return obs.dst_defined and not obs.src_active
    reached = state_at(step).steps
    if not obs.src_defined and not obs.dst_defined:
        return step in (Step.ROLLBACK_STARTED, Step.REVERT_STARTED)
    if obs.dst_defined and Step.DEST_DEFINED not in reached:
        return False
    return obs.src_defined or Step.SOURCE_UNDEFINED in reached


@pytest.mark.parametrize("step", list(Step.FLOW) + [Step.CONFIRM_STARTED, Step.REVERT_STARTED, Step.ROLLBACK_STARTED])
@pytest.mark.parametrize("was_running", [True, False])
def test_every_position_ends_on_exactly_one_host(step, was_running):
    for obs in OBSERVATIONS:
        plan = R.plan_recovery(state_at(step, was_running), obs)
        if not allowed(step, obs):
            # No action on a state the journal cannot explain: reported, with what to check.
            assert plan.unknown and plan.actions == [] and plan.final_step is None, (step, obs, plan)
            assert plan.reason.startswith("nothing done: ") and plan.hint
            continue
        assert not plan.unknown, (step, obs, plan)
        end = apply(obs, plan.actions)
        assert end["sd"] != end["dd"], (step, obs, plan)  # defined on exactly one host
        on_src = plan.target == "source"
        assert end["sd"] == on_src
        if was_running:
            assert (end["sa"], end["da"]) == (on_src, not on_src)


def test_before_guest_up_rolls_back_after_stays():
    obs = R.Observed(src_defined=False, src_active=False, dst_defined=True, dst_active=True)
    assert R.plan_recovery(state_at(Step.DEST_STARTED), obs).target == "source"
    plan = R.plan_recovery(state_at(Step.GUEST_UP), obs)
    assert plan.target == "destination" and plan.actions == [] and plan.final_step is None


def test_confirm_deletes_source_disks_only_on_request():
    obs = R.Observed(False, False, True, True)
    plan = R.plan_recovery(state_at(Step.CONFIRM_STARTED, delete_source_disks=True), obs)
    assert R.DELETE_SOURCE_DISKS in plan.actions
    plan = R.plan_recovery(state_at(Step.CONFIRM_STARTED, delete_source_disks=False), obs)
    assert plan.actions == [] and plan.final_step == Step.CONFIRMED


def test_finished_or_absent_journal_needs_nothing():
    obs = R.Observed(True, True, False, False)
    assert R.plan_recovery(None, obs).target == "nothing"
    assert R.plan_recovery(state_at(Step.CONFIRMED), obs).target == "nothing"
