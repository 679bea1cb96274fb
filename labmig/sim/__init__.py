"""The migration simulator: plans made real in virtual time.

    simulate(plan)   run plan.strategy on plan; returns a labmig.model.MigrationResult
    clock            Clock and Agenda: exact, deterministic virtual time
    workloads        WORKLOADS: how the guest dirties pages (through the core's bitmaps)
    engine           LiveEngine: QEMU's RAM migration mechanics on dirty bitmaps
    analytic         the closed-form model the engine is tested against

The strategies (policies deciding when to switch over, throttle, switch to
post-copy, give up) live in :mod:`labmig.strategies`.
"""
from __future__ import annotations

from ..model import MigrationResult
from ..plan import Plan


def simulate(plan: Plan, track_versions: bool = False, strict: bool = True) -> MigrationResult:
    """Run ``plan`` with its strategy and options; deterministic for ``plan.seed``."""
    from ..strategies import make_strategy

    strategy = make_strategy(plan.strategy, plan.options, strict=strict)
    return strategy.simulate(plan.validated(), track_versions=track_versions)
