"""``simulate(plan)``: a plan's strategy driving the engine, in virtual time.

    simulate(plan)   make the plan's strategy (labmig.strategies) with the plan's options and
                     run it on the plan; returns a labmig.model.MigrationResult

This module sits above both the engine (labmig.sim.engine, clock, workloads) and the
strategies, which are written on the engine; the rest of the simulator package sits below
the strategies, so that imports run one way.
"""
from __future__ import annotations

from ..model import MigrationResult
from ..strategies import make_strategy
from .plan import Plan

__all__ = ["simulate"]


def simulate(plan: Plan, track_versions: bool = False) -> MigrationResult:
    """Run ``plan`` with its strategy and options; deterministic for ``plan.seed``.

    ``track_versions`` has the engine keep a version per page on both sides, so a test can
    check the destination ended with every page's latest one.
    """
    strategy = make_strategy(plan.strategy, plan.options)
    return strategy.simulate(plan.validated(), track_versions=track_versions)
